//! End to end on the local platform: the real `vigil run` binary runs real `vigil demo-app`
//! processes behind its weighted proxy, real HTTP load flows through it, and a real Prometheus
//! scrapes the proxy every second; the tests read the engine's admin endpoint.
//!
//! Timing on a loaded 2-core machine varies, so every wait polls the status with a generous
//! deadline instead of sleeping a fixed time; every process is killed when its guard drops.

mod support;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use support::prometheus::PrometheusServer;
use support::vigil_run::{VIGIL, VigilRun, admin_addr, free_port};
use tokio::sync::oneshot;
use url::Url;
use vigil::api::{AnalysisPhase, RolloutPhase};
use vigil::platform::local::admin::ADMIN_TOKEN_ENV;
use vigil::platform::local::engine::RolloutView;
use vigil::platform::local::proxy::REVISION_HEADER;

/// The longest any single wait may take before the test fails.
const WAIT: Duration = Duration::from_secs(90);

/// Metrics ports the shared Prometheus scrapes; each test takes its own.
const SCRAPED: usize = 4;

/// One Prometheus for the whole file, scraping every port in [`SCRAPED`] every second (the
/// first scrape comes ~6 s after start, so starting it once saves each test that wait).
fn prometheus() -> &'static (PrometheusServer, Vec<u16>) {
    static SERVER: OnceLock<(PrometheusServer, Vec<u16>)> = OnceLock::new();
    SERVER.get_or_init(|| {
        let ports: Vec<u16> = (0..SCRAPED).map(|_| free_port()).collect();
        let targets: Vec<String> = ports.iter().map(|p| format!("'127.0.0.1:{p}'")).collect();
        let config = format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             scrape_configs:\n  - job_name: vigil\n    static_configs: [{{targets: [{}]}}]\n",
            targets.join(", ")
        );
        (PrometheusServer::start_with_config(&config), ports)
    })
}

/// Templates with test-sized timings: first look 4 s after the gate opens, then every 3 s,
/// two looks, over a 10 s window.
fn templates_yaml(consecutive_error_limit: i32) -> String {
    format!(
        r#"apiVersion: vigil.dev/v1alpha1
kind: AnalysisTemplate
metadata:
  name: e2e-error-rate
spec:
  args:
    - name: rollout
    # Built in: selects this release's canary only, never a previous canary's requests.
    - name: canary-revision
  metrics:
    - name: error-rate
      # Long enough for Prometheus to have scraped the canary under a loaded machine; one
      # early look without data may still happen, and must not pause the rollout.
      initialDelay: 8s
      interval: 3s
      count: 2
      failureLimit: 0
      inconclusiveLimit: 1
      consecutiveErrorLimit: {consecutive_error_limit}
      successCondition: result < 0.05
      provider:
        prometheus:
          address: http://127.0.0.1:9090
          query: |
            (sum(rate(http_requests_total{{rollout="{{{{args.rollout}}}}", revision="{{{{args.canary-revision}}}}", code=~"5.."}}[10s])) or vector(0))
            /
            (sum(rate(http_requests_total{{rollout="{{{{args.rollout}}}}", revision="{{{{args.canary-revision}}}}"}}[10s]))
              and sum(increase(http_requests_total{{rollout="{{{{args.rollout}}}}", revision="{{{{args.canary-revision}}}}"}}[10s])) >= 10)
"#
    )
}

/// [`templates_yaml`] with no `address`: the Prometheus given with `--prometheus` applies.
fn templates_without_address() -> String {
    let with = templates_yaml(4);
    let without = with.replace("          address: http://127.0.0.1:9090\n", "");
    assert_ne!(with, without, "the template names no address any more");
    without
}

/// A Rollout of `vigil demo-app` with `app_args`; `steps` is the YAML list of steps.
fn rollout_yaml(name: &str, listen: u16, metrics: u16, command: &str, app_args: &[&str]) -> String {
    let args: Vec<String> = app_args.iter().map(|a| format!("{a:?}")).collect();
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
          command: [{command:?}, "demo-app"]
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
              - templateName: e2e-error-rate
        - setWeight: 80
"#,
        args = args.join(", ")
    )
}

/// A running `vigil run` (tests/support/vigil_run.rs).
type Engine = VigilRun;

async fn get_view(client: &reqwest::Client, engine: &Engine, name: &str) -> Option<RolloutView> {
    engine.view(client, name).await
}

/// Polls the Rollout until `done` holds; fails with the last view and the engine's log.
async fn wait_for(
    client: &reqwest::Client,
    engine: &Engine,
    name: &str,
    what: &str,
    done: impl Fn(&RolloutView) -> bool,
) -> RolloutView {
    engine.wait_for(client, name, what, WAIT, done).await
}

/// Sends `n` requests through the proxy; returns (status, revision header, body) of each.
async fn probe(client: &reqwest::Client, listen: u16, n: usize) -> Vec<(u16, String, String)> {
    let mut out = Vec::new();
    for _ in 0..n {
        let response = client
            .get(format!("http://127.0.0.1:{listen}/"))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .expect("request through the proxy");
        let status = response.status().as_u16();
        let revision = response
            .headers()
            .get(REVISION_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = response.text().await.unwrap_or_default();
        out.push((status, revision, body));
    }
    out
}

/// Steady load through the proxy until the returned sender is dropped.
fn start_load(listen: u16) -> oneshot::Sender<()> {
    support::vigil_run::start_load(listen, 40.0)
}

async fn post_apply(client: &reqwest::Client, engine: &Engine, yaml: String) -> (u16, String) {
    let response = client
        .post(format!("http://{}/apply", engine.admin))
        .bearer_auth(engine.token())
        .header("content-type", "application/yaml")
        .body(yaml)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("apply");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write file");
    path
}

/// Runs a test body under a hard limit so a hang is a failure.
async fn bounded<F: std::future::Future<Output = ()>>(limit: Duration, body: F) {
    tokio::time::timeout(limit, body)
        .await
        .expect("test took too long");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_release_is_promoted_and_bad_release_rolled_back() {
    support::install_crypto_provider();
    let metrics = prometheus().1[0];
    let prometheus_url = prometheus().0.url().to_string();
    let dir = tempfile::tempdir().expect("temp dir");
    let listen = free_port();
    let name = "shop";
    let v1 = rollout_yaml(name, listen, metrics, VIGIL, &["--version", "v1"]);
    // No `address` in the template: `--prometheus` applies.
    let files = [
        write(dir.path(), "rollout.yaml", &v1),
        write(dir.path(), "templates.yaml", &templates_without_address()),
    ];
    let engine = Engine::start(
        dir.path(),
        &files,
        admin_addr(),
        &["--prometheus", &prometheus_url],
    );
    let client = reqwest::Client::new();
    bounded(Duration::from_secs(240), async {
        let first = wait_for(&client, &engine, name, "v1 Healthy", |v| {
            v.status.phase == Some(RolloutPhase::Healthy)
        })
        .await;
        let _load = start_load(listen);
        // The live view, not on a terminal: plain lines into a file.
        let watch_out = dir.path().join("watch.txt");
        let mut watcher = Watcher(
            Command::new(VIGIL)
                .args(["local", "get", name, "--watch", "--admin"])
                .arg(engine.admin.to_string())
                .arg("--state-dir")
                .arg(&engine.state_dir)
                .stdin(Stdio::null())
                .stdout(std::fs::File::create(&watch_out).expect("watch output"))
                .stderr(Stdio::null())
                .spawn()
                .expect("start vigil local get --watch"),
        );

        // A healthy release goes through every step and becomes stable.
        let v2 = rollout_yaml(name, listen, metrics, VIGIL, &["--version", "v2"]);
        let (code, body) = post_apply(&client, &engine, v2).await;
        assert_eq!(code, 200, "{body}");
        let promoted = wait_for(&client, &engine, name, "v2 promoted", |v| {
            v.status.phase == Some(RolloutPhase::Healthy)
                && v.status.stable_revision.as_deref() == Some(v.desired_revision.as_str())
                && v.generation == first.generation + 1
        })
        .await;
        assert_ne!(
            promoted.status.stable_revision, first.status.stable_revision,
            "the stable revision must be v2's hash"
        );
        let v2_hash = promoted.desired_revision.clone();
        let run = promoted
            .analysis_runs
            .iter()
            .find(|r| r.name.contains(&v2_hash))
            .expect("v2's analysis run");
        assert_eq!(run.status.phase, Some(AnalysisPhase::Successful), "{run:?}");
        let routing = &promoted.routing;
        assert_eq!(routing.stable.as_ref().map(|b| &b.revision), Some(&v2_hash));
        assert!(
            routing.canary_weight == 0
                || routing.canary.as_ref().map(|b| &b.revision) == Some(&v2_hash),
            "all traffic to v2: {routing:?}"
        );
        for (status, revision, body) in probe(&client, listen, 20).await {
            assert_eq!(
                (status, revision.as_str()),
                (200, v2_hash.as_str()),
                "{body}"
            );
            assert!(body.contains("v2"), "{body}");
        }

        // A bad release (30% errors) is rolled back at its analysis, by itself.
        let v3 = rollout_yaml(
            name,
            listen,
            metrics,
            VIGIL,
            &["--version", "v3", "--error-rate", "0.3"],
        );
        let (code, body) = post_apply(&client, &engine, v3).await;
        assert_eq!(code, 200, "{body}");
        let degraded = wait_for(&client, &engine, name, "v3 rolled back", |v| {
            v.status.phase == Some(RolloutPhase::Degraded) && v.routing.canary_weight == 0
        })
        .await;
        let message = degraded.status.message.clone().unwrap_or_default();
        assert!(
            message.contains("error-rate") && message.contains("result < 0.05"),
            "the message names the failing metric and its reason: {message}"
        );
        assert_eq!(
            degraded.status.stable_revision.as_deref(),
            Some(v2_hash.as_str())
        );
        assert_eq!(
            degraded
                .routing
                .stable
                .as_ref()
                .map(|b| b.revision.as_str()),
            Some(v2_hash.as_str())
        );
        for (status, revision, _) in probe(&client, listen, 30).await {
            assert_eq!((status, revision.as_str()), (200, v2_hash.as_str()));
        }
        releases_were_recorded(&engine, name, &v2_hash).await;
        watcher.stop();
        let watched = std::fs::read_to_string(&watch_out).expect("the watch output");
        plain_watch_lines_are_short_and_timestamped(&watched);
    })
    .await;
}

/// A process this test started, killed when the test ends.
struct Watcher(Child);

impl Watcher {
    fn stop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop();
    }
}

/// v2 promoted and v3 rolled back: each has a report in the state directory, and `vigil
/// history` lists both with the DORA figures.
async fn releases_were_recorded(engine: &Engine, name: &str, v2_hash: &str) {
    let reports = engine.state_dir.join("reports");
    let deadline = Instant::now() + WAIT;
    let files = loop {
        let files: Vec<String> = std::fs::read_dir(&reports)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        if files.len() >= 2 || Instant::now() > deadline {
            break files;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        files.len(),
        2,
        "a report per release: {files:?}\n{}",
        engine.log()
    );
    let v2_report = files
        .iter()
        .find(|f| f.starts_with(&format!("{name}-{v2_hash}-")))
        .expect("v2's report");
    let v3_report = files.iter().find(|f| *f != v2_report).expect("v3's report");
    let v2_html = std::fs::read_to_string(reports.join(v2_report)).expect("v2's report");
    assert!(v2_html.contains("Promoted"), "{v2_html}");
    let v3_html = std::fs::read_to_string(reports.join(v3_report)).expect("v3's report");
    assert!(
        v3_html.contains("Rolled back") && v3_html.contains("Metric error-rate"),
        "{v3_html}"
    );
    assert!(v3_html.contains("<svg"), "the measurements are plotted");
    let output = Command::new(VIGIL)
        .args(["history", name, "--state-dir"])
        .arg(&engine.state_dir)
        .output()
        .expect("vigil history");
    let history = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{history}");
    assert!(
        history.contains("promoted") && history.contains("rolled back"),
        "{history}"
    );
    assert!(
        history.contains("2 releases: 1 promoted, 1 rolled back; change failure rate 50%"),
        "{history}"
    );
    assert!(
        history.contains(v3_report.as_str()),
        "the report is named: {history}"
    );
}

/// `vigil local get --watch` into a file: one line per change, each with a time and at most
/// 120 characters, through the whole release.
fn plain_watch_lines_are_short_and_timestamped(watched: &str) {
    let lines: Vec<&str> = watched.lines().collect();
    assert!(lines.len() >= 3, "a line per change: {watched}");
    for line in &lines {
        assert!(line.chars().count() <= 120, "too long: {line}");
        let time = line.get(..8).unwrap_or_default();
        assert!(
            time.len() == 8 && time.as_bytes()[2] == b':' && time.as_bytes()[5] == b':',
            "starts with HH:MM:SS: {line}"
        );
        assert!(
            !line.contains('\x1b'),
            "no colour when not a terminal: {line}"
        );
    }
    assert!(
        lines
            .iter()
            .any(|l| l.contains("weight") && l.contains("Progressing")),
        "{watched}"
    );
    assert!(lines.iter().any(|l| l.contains("Degraded")), "{watched}");
}

/// An analysis template of one `web` metric asking `server` whether the release is fine.
fn web_template(server: &Url) -> String {
    format!(
        r#"apiVersion: vigil.dev/v1alpha1
kind: AnalysisTemplate
metadata:
  name: e2e-error-rate
spec:
  args:
    - name: rollout
  metrics:
    - name: smoke-check
      successCondition: result.ok == true
      provider:
        web:
          url: "{server}checks/{{{{args.rollout}}}}"
          jsonPath: "{{$.data}}"
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_metric_that_fails_rolls_the_canary_back() {
    support::install_crypto_provider();
    // The check answers "not ok" about every release: the canary must never become stable.
    let checks = support::fake_http::FakeServer::start(|_| {
        support::fake_http::Reply::new(
            200,
            r#"{"data": {"ok": false, "reason": "smoke test: checkout returns 500"}}"#,
        )
    })
    .await;
    let dir = tempfile::tempdir().expect("temp dir");
    let listen = free_port();
    let name = "webshop";
    let v1 = rollout_yaml(name, listen, free_port(), VIGIL, &["--version", "v1"]);
    let files = [
        write(dir.path(), "rollout.yaml", &v1),
        write(dir.path(), "templates.yaml", &web_template(&checks.url)),
    ];
    let engine = Engine::start(dir.path(), &files, admin_addr(), &[]);
    let client = reqwest::Client::new();
    bounded(Duration::from_secs(240), async {
        let first = wait_for(&client, &engine, name, "v1 Healthy", |v| {
            v.status.phase == Some(RolloutPhase::Healthy)
        })
        .await;
        let v1_hash = first.desired_revision.clone();
        let v2 = rollout_yaml(name, listen, free_port(), VIGIL, &["--version", "v2"]);
        let (code, body) = post_apply(&client, &engine, v2).await;
        assert_eq!(code, 200, "{body}");
        let degraded = wait_for(&client, &engine, name, "v2 rolled back", |v| {
            v.status.phase == Some(RolloutPhase::Degraded) && v.routing.canary_weight == 0
        })
        .await;
        let message = degraded.status.message.clone().unwrap_or_default();
        assert!(
            message.contains("smoke-check") && message.contains("result.ok == true"),
            "the message names the failing web metric and its condition: {message}"
        );
        assert_eq!(
            degraded.status.stable_revision.as_deref(),
            Some(v1_hash.as_str())
        );
        let request = checks.stats.heads().first().cloned().unwrap_or_default();
        assert!(
            request.starts_with(&format!("GET /checks/{name} HTTP/1.1")),
            "{request}"
        );
        for (status, revision, _) in probe(&client, listen, 20).await {
            assert_eq!((status, revision.as_str()), (200, v1_hash.as_str()));
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_killed_mid_rollout_resumes_at_the_same_step() {
    support::install_crypto_provider();
    let metrics = prometheus().1[1];
    let prometheus_url = prometheus().0.url().to_string();
    let dir = tempfile::tempdir().expect("temp dir");
    let listen = free_port();
    let name = "cart";
    let v1 = rollout_yaml(name, listen, metrics, VIGIL, &["--version", "v1"]);
    let templates = write(dir.path(), "templates.yaml", &templates_yaml(4));
    let rollout = write(dir.path(), "rollout.yaml", &v1);
    let client = reqwest::Client::new();
    let prometheus_args = ["--prometheus", prometheus_url.as_str()];
    bounded(Duration::from_secs(240), async {
        let mut engine = Engine::start(
            dir.path(),
            &[rollout.clone(), templates.clone()],
            admin_addr(),
            &prometheus_args,
        );
        wait_for(&client, &engine, name, "v1 Healthy", |v| {
            v.status.phase == Some(RolloutPhase::Healthy)
        })
        .await;
        let _load = start_load(listen);
        let (code, body) = post_apply(
            &client,
            &engine,
            rollout_yaml(name, listen, metrics, VIGIL, &["--version", "v2"]),
        )
        .await;
        assert_eq!(code, 200, "{body}");
        // Kill it while the analysis step has measured once and is waiting for the next look.
        let before = wait_for(&client, &engine, name, "the analysis step measuring", |v| {
            v.status.current_step_index == Some(1)
                && v.analysis_runs.iter().any(|r| {
                    r.name.ends_with("-step1")
                        && r.status.phase == Some(AnalysisPhase::Running)
                        && r.status.metric_results.iter().any(|m| m.count == 1)
                })
        })
        .await;
        engine.kill();
        let recorded: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("state").join(format!("{name}.status.json")))
                .expect("recorded status"),
        )
        .expect("status JSON");
        assert_eq!(recorded["currentStepIndex"], 1, "{recorded}");
        let run_before = before
            .analysis_runs
            .iter()
            .find(|r| r.name.ends_with("-step1"))
            .expect("step run")
            .clone();

        // The file still holds v1, but the state dir holds v2's rollout: apply v2 on restart,
        // as a person re-running `vigil run` with the file they edited would.
        let rollout = write(
            dir.path(),
            "rollout.yaml",
            &rollout_yaml(name, listen, metrics, VIGIL, &["--version", "v2"]),
        );
        let engine = Engine::start(
            dir.path(),
            &[rollout, templates.clone()],
            admin_addr(),
            &prometheus_args,
        );
        let resumed = wait_for(&client, &engine, name, "the restarted engine", |_| true).await;
        // Its first look may already have taken the measurement that fell due while it was
        // down and finished the analysis step; it must not start over nor jump further.
        assert!(
            matches!(resumed.status.current_step_index, Some(1 | 2)),
            "resumed at the step it was killed in: {:?}",
            resumed.status
        );
        assert_eq!(resumed.status.canary_attempt, before.status.canary_attempt);
        assert_eq!(
            resumed.generation, before.generation,
            "same spec, same generation"
        );
        let done = wait_for(&client, &engine, name, "v2 promoted after restart", |v| {
            v.status.phase == Some(RolloutPhase::Healthy)
                && v.status.stable_revision.as_deref() == Some(v.desired_revision.as_str())
        })
        .await;
        // The same run went on: same start, exactly `count` measurements, no second run.
        let runs: Vec<_> = done
            .analysis_runs
            .iter()
            .filter(|r| r.name.contains(&done.desired_revision))
            .collect();
        assert_eq!(
            runs.len(),
            1,
            "one analysis run for the one analysis step: {runs:#?}"
        );
        assert_eq!(runs[0].name, run_before.name);
        assert_eq!(runs[0].status.started_at, run_before.status.started_at);
        assert_eq!(runs[0].status.phase, Some(AnalysisPhase::Successful));
        assert_eq!(runs[0].status.metric_results[0].count, 2, "{:#?}", runs[0]);
        // Every transition recorded once: no step repeated.
        let mut seen = std::collections::BTreeSet::new();
        for event in &done.events {
            assert!(
                seen.insert((&event.reason, &event.message)),
                "event repeated after the restart: {event:?}"
            );
        }
        for (status, revision, _) in probe(&client, listen, 10).await {
            assert_eq!(
                (status, revision.as_str()),
                (200, done.desired_revision.as_str())
            );
        }
    })
    .await;
}

/// An engine without Prometheus whose Rollout `name` serves v1 (Healthy): the start of the
/// bad-input tests.
struct ServingV1 {
    _dir: tempfile::TempDir,
    engine: Engine,
    client: reqwest::Client,
    listen: u16,
    metrics: u16,
    v1: String,
    v1_hash: String,
}

async fn serving_v1(name: &str) -> ServingV1 {
    support::install_crypto_provider();
    let dir = tempfile::tempdir().expect("temp dir");
    let listen = free_port();
    let metrics = free_port();
    let v1 = rollout_yaml(name, listen, metrics, VIGIL, &["--version", "v1"]);
    let files = [
        write(dir.path(), "rollout.yaml", &v1),
        write(dir.path(), "templates.yaml", &templates_yaml(4)),
    ];
    let engine = Engine::start(dir.path(), &files, admin_addr(), &[]);
    let client = reqwest::Client::new();
    let healthy = wait_for(&client, &engine, name, "v1 Healthy", |v| {
        v.status.phase == Some(RolloutPhase::Healthy)
    })
    .await;
    ServingV1 {
        _dir: dir,
        v1_hash: healthy.desired_revision.clone(),
        engine,
        client,
        listen,
        metrics,
        v1,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_command_and_malformed_apply_are_clear_and_stable_keeps_serving() {
    let name = "web";
    bounded(Duration::from_secs(120), async {
        let ServingV1 {
            _dir,
            engine,
            client,
            listen,
            metrics,
            v1,
            v1_hash,
        } = serving_v1(name).await;

        let missing = "/nonexistent/vigil-no-such-app";
        let bad = rollout_yaml(name, listen, metrics, missing, &["--version", "v2"]);
        let (code, body) = post_apply(&client, &engine, bad).await;
        assert_eq!(code, 200, "{body}");
        let stuck = wait_for(&client, &engine, name, "the missing command named", |v| {
            v.status
                .message
                .as_deref()
                .is_some_and(|m| m.contains(missing))
        })
        .await;
        assert_eq!(
            stuck.status.stable_revision.as_deref(),
            Some(v1_hash.as_str())
        );
        for (status, revision, _) in probe(&client, listen, 20).await {
            assert_eq!((status, revision.as_str()), (200, v1_hash.as_str()));
        }

        // A malformed document is refused with the field named; nothing changes.
        let malformed = v1.replace("      steps:", "      stepz:");
        let (code, body) = post_apply(&client, &engine, malformed).await;
        assert_eq!(code, 422, "{body}");
        assert!(body.contains("stepz"), "names the field: {body}");
        for (status, revision, _) in probe(&client, listen, 10).await {
            assert_eq!((status, revision.as_str()), (200, v1_hash.as_str()));
        }

        // `vigil local abort` gives up on the release that cannot start; it reads the admin
        // token from the state directory.
        let output = Command::new(VIGIL)
            .args(["local", "--admin", &engine.admin.to_string(), "abort", name])
            .arg("--state-dir")
            .arg(&engine.state_dir)
            .env_remove(ADMIN_TOKEN_ENV)
            .output()
            .expect("vigil local abort");
        assert!(output.status.success(), "{output:?}");
        let aborted = wait_for(&client, &engine, name, "aborted", |v| {
            v.status.phase == Some(RolloutPhase::Aborted)
        })
        .await;
        assert_eq!(aborted.routing.canary_weight, 0);
        // With no --state-dir, `vigil local` finds the token in `.vigil`, `vigil run`'s default.
        std::os::unix::fs::symlink(&engine.state_dir, _dir.path().join(".vigil"))
            .expect("link .vigil");
        let output = Command::new(VIGIL)
            .args(["local", "--admin", &engine.admin.to_string(), "get", name])
            .current_dir(_dir.path())
            .env_remove(ADMIN_TOKEN_ENV)
            .output()
            .expect("vigil local get");
        assert!(output.status.success(), "{output:?}");
        let line = String::from_utf8_lossy(&output.stdout);
        assert!(line.contains("Aborted"), "{line}");
        for (status, revision, _) in probe(&client, listen, 10).await {
            assert_eq!((status, revision.as_str()), (200, v1_hash.as_str()));
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workload_ref_is_refused_on_this_machine_and_the_stable_keeps_serving() {
    let name = "shop";
    bounded(Duration::from_secs(120), async {
        let ServingV1 {
            _dir,
            engine,
            client,
            listen,
            metrics,
            v1_hash,
            ..
        } = serving_v1(name).await;
        let v1 = rollout_yaml(name, listen, metrics, VIGIL, &["--version", "v1"]);
        let (Some(start), Some(end)) = (v1.find("  template:\n"), v1.find("  strategy:\n")) else {
            panic!("the Rollout YAML has a template and a strategy: {v1}");
        };
        let adopting = format!(
            "{}  workloadRef: {{apiVersion: apps/v1, kind: Deployment, name: {name}}}\n{}",
            &v1[..start],
            &v1[end..]
        );
        let (code, body) = post_apply(&client, &engine, adopting).await;
        assert_eq!(code, 200, "{body}");
        let held = wait_for(&client, &engine, name, "the workloadRef refused", |v| {
            v.status
                .conditions
                .iter()
                .any(|c| c.type_ == "InvalidSpec" && c.status == "True")
        })
        .await;
        let message = held.status.message.clone().unwrap_or_default();
        assert!(
            message.contains("spec.workloadRef") && message.contains("no Deployments"),
            "{message}"
        );
        assert_eq!(
            held.status.stable_revision.as_deref(),
            Some(v1_hash.as_str())
        );
        for (status, revision, _) in probe(&client, listen, 10).await {
            assert_eq!((status, revision.as_str()), (200, v1_hash.as_str()));
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_analysis_that_cannot_start_holds_the_release_before_any_traffic_moves() {
    let name = "shop";
    bounded(Duration::from_secs(120), async {
        let ServingV1 {
            _dir,
            engine,
            client,
            listen,
            metrics,
            v1_hash,
            ..
        } = serving_v1(name).await;
        // v2's analysis uses a template whose `service` argument nobody passes.
        let template = r#"apiVersion: vigil.dev/v1alpha1
kind: AnalysisTemplate
metadata:
  name: needs-service
spec:
  args:
    - name: service
  metrics:
    - name: up
      successCondition: result == 1
      provider:
        prometheus:
          address: http://127.0.0.1:9
          query: up{service="{{args.service}}"}
"#;
        let v2 = rollout_yaml(name, listen, metrics, VIGIL, &["--version", "v2"]).replace(
            "templateName: e2e-error-rate",
            "templateName: needs-service",
        );
        let (code, body) = post_apply(&client, &engine, format!("{template}---\n{v2}")).await;
        assert_eq!(code, 200, "{body}");
        let held = wait_for(
            &client,
            &engine,
            name,
            "the analysis problem in status",
            |v| {
                v.status
                    .conditions
                    .iter()
                    .any(|c| c.type_ == "InvalidSpec" && c.status == "True")
            },
        )
        .await;
        let message = held.status.message.clone().unwrap_or_default();
        assert!(
            message.contains("spec.strategy.canary.steps[1].analysis")
                && message.contains("service"),
            "{message}"
        );
        assert_eq!(held.routing.canary_weight, 0, "{held:#?}");
        assert_eq!(
            held.status.stable_revision.as_deref(),
            Some(v1_hash.as_str())
        );
        for (status, revision, _) in probe(&client, listen, 10).await {
            assert_eq!((status, revision.as_str()), (200, v1_hash.as_str()));
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saving_an_edited_file_starts_a_release_and_a_broken_save_is_ignored() {
    let name = "edit";
    bounded(Duration::from_secs(120), async {
        let ServingV1 {
            _dir,
            engine,
            client,
            listen,
            metrics,
            v1_hash,
            ..
        } = serving_v1(name).await;
        let file = _dir.path().join("rollout.yaml");

        std::fs::write(
            &file,
            "apiVersion: vigil.dev/v1alpha1\nkind: Rollout\nspec: [\n",
        )
        .expect("save a broken file");
        let deadline = Instant::now() + WAIT;
        while !std::fs::read_to_string(&engine.log)
            .unwrap_or_default()
            .contains("changed files ignored")
        {
            assert!(
                Instant::now() < deadline,
                "never reported: {}",
                engine.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let view = get_view(&client, &engine, name).await.expect("view");
        assert_eq!(view.desired_revision, v1_hash, "nothing changed");
        assert_eq!(view.status.phase, Some(RolloutPhase::Healthy));

        let v2 = rollout_yaml(name, listen, metrics, VIGIL, &["--version", "v2"]);
        std::fs::write(&file, v2).expect("save v2");
        let moving = wait_for(&client, &engine, name, "the saved v2 applied", |v| {
            v.desired_revision != v1_hash
        })
        .await;
        assert_eq!(
            moving.status.stable_revision.as_deref(),
            Some(v1_hash.as_str()),
            "a release against the running stable"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_prometheus_pauses_with_the_reason_and_stable_keeps_serving() {
    support::install_crypto_provider();
    let dir = tempfile::tempdir().expect("temp dir");
    let listen = free_port();
    let metrics = free_port();
    let name = "api";
    let nowhere = format!("http://127.0.0.1:{}/", free_port());
    let files = [
        write(
            dir.path(),
            "rollout.yaml",
            &rollout_yaml(name, listen, metrics, VIGIL, &["--version", "v1"]),
        ),
        write(dir.path(), "templates.yaml", &templates_yaml(0)),
    ];
    let engine = Engine::start(
        dir.path(),
        &files,
        admin_addr(),
        &["--prometheus", &nowhere],
    );
    let client = reqwest::Client::new();
    bounded(Duration::from_secs(120), async {
        let healthy = wait_for(&client, &engine, name, "v1 Healthy", |v| {
            v.status.phase == Some(RolloutPhase::Healthy)
        })
        .await;
        let v2 = rollout_yaml(name, listen, metrics, VIGIL, &["--version", "v2"]);
        let (code, body) = post_apply(&client, &engine, v2).await;
        assert_eq!(code, 200, "{body}");
        let paused = wait_for(
            &client,
            &engine,
            name,
            "paused on the analysis error",
            |v| v.status.phase == Some(RolloutPhase::Paused),
        )
        .await;
        let run = paused
            .analysis_runs
            .iter()
            .find(|r| r.name.ends_with("-step1"))
            .expect("the step's run");
        assert_eq!(run.status.phase, Some(AnalysisPhase::Error), "{run:#?}");
        let message = paused.status.message.clone().unwrap_or_default();
        assert!(
            message.contains("error-rate") && message.contains("127.0.0.1"),
            "the reason names the metric and the Prometheus it could not reach: {message}"
        );
        assert_eq!(
            paused.status.stable_revision,
            healthy.status.stable_revision
        );
        for (status, _, _) in probe(&client, listen, 20).await {
            assert_eq!(status, 200);
        }
    })
    .await;
}

/// Waits for `vigil run` to exit by itself; returns its exit code and log.
/// One GET through the proxy with an optional header: (status, revision that served it).
async fn get_with(
    client: &reqwest::Client,
    listen: u16,
    path: &str,
    header: Option<(&str, &str)>,
) -> (u16, String) {
    let mut request = client
        .get(format!("http://127.0.0.1:{listen}{path}"))
        .timeout(Duration::from_secs(5));
    if let Some((name, value)) = header {
        request = request.header(name, value);
    }
    let response = request.send().await.expect("request through the proxy");
    let revision = response
        .headers()
        .get(REVISION_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (response.status().as_u16(), revision)
}

/// The mirrored copies the proxy counted for `revision` (all codes).
async fn mirrored_copies(client: &reqwest::Client, metrics: u16, revision: &str) -> u64 {
    let text = client
        .get(format!("http://127.0.0.1:{metrics}/metrics"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .unwrap_or_default();
    text.lines()
        .filter(|l| {
            l.starts_with("http_requests_total{")
                && l.contains(&format!("revision=\"{revision}\""))
                && l.contains("mirrored=\"true\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// `vigil run` with header routing and mirroring: at weight 0 requests with the header reach
/// only the canary; mirrored requests reach the canary (counted by the proxy with
/// `mirrored="true"`) while every client is answered by the stable; an abort removes both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_routed_requests_reach_only_the_canary_and_mirrored_ones_never_answer_clients() {
    let name = "routes";
    bounded(Duration::from_secs(150), async {
        let ServingV1 {
            _dir,
            engine,
            client,
            listen,
            metrics,
            v1_hash,
            ..
        } = serving_v1(name).await;
        let v2 = rollout_yaml(name, listen, metrics, VIGIL, &["--version", "v2"]);
        let (head, _) = v2.split_once("      steps:").expect("steps");
        let v2 = format!(
            r#"{head}      steps:
        - setHeaderRoute:
            name: testers
            match:
              - headerName: x-canary
                headerValue: {{exact: "yes"}}
        - setMirrorRoute:
            name: shadow
            match:
              - path: {{prefix: /mirror}}
        - pause: {{}}
"#
        )
        .replace(
            &format!("          listen: 127.0.0.1:{listen}\n"),
            &format!(
                "          listen: 127.0.0.1:{listen}\n        managedRoutes:\n          - name: testers\n          - name: shadow\n"
            ),
        );
        let (code, body) = post_apply(&client, &engine, v2).await;
        assert_eq!(code, 200, "{body}");
        let paused = wait_for(&client, &engine, name, "the pause after both routes", |v| {
            v.status.phase == Some(RolloutPhase::Paused)
        })
        .await;
        let v2_hash = paused.desired_revision.clone();
        assert_eq!(paused.routing.canary_weight, 0);
        assert_eq!(paused.routing.routes.header.len(), 1);
        assert_eq!(paused.routing.routes.mirror.len(), 1);

        for _ in 0..10 {
            let with = get_with(&client, listen, "/", Some(("x-canary", "yes"))).await;
            assert_eq!(with, (200, v2_hash.clone()), "the header reaches the canary");
            let without = get_with(&client, listen, "/", Some(("x-canary", "no"))).await;
            assert_eq!(without, (200, v1_hash.clone()), "weight 0: the stable");
        }
        let before = mirrored_copies(&client, metrics, &v2_hash).await;
        for _ in 0..10 {
            let (_, revision) = get_with(&client, listen, "/mirror/items", None).await;
            assert_eq!(revision, v1_hash, "a client is always answered by the stable");
        }
        let deadline = Instant::now() + WAIT;
        while mirrored_copies(&client, metrics, &v2_hash).await < before + 10 {
            assert!(Instant::now() < deadline, "the copies never reached the canary");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        let output = Command::new(VIGIL)
            .args(["local", "--admin", &engine.admin.to_string(), "abort", name])
            .arg("--state-dir")
            .arg(&engine.state_dir)
            .env_remove(ADMIN_TOKEN_ENV)
            .output()
            .expect("vigil local abort");
        assert!(output.status.success(), "{output:?}");
        let aborted = wait_for(&client, &engine, name, "aborted without routes", |v| {
            v.status.phase == Some(RolloutPhase::Aborted) && v.routing.routes.is_empty()
        })
        .await;
        assert_eq!(aborted.routing.canary_weight, 0);
        let after = get_with(&client, listen, "/", Some(("x-canary", "yes"))).await;
        assert_eq!(after, (200, v1_hash.clone()), "the header route is gone");
    })
    .await;
}

fn exit_of(mut engine: Engine) -> (Option<i32>, String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let child = engine.child.as_mut().expect("running");
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(&engine.log).unwrap_or_default();
            engine.child = None;
            return (status.code(), log);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("vigil run did not exit; log:\n{}", engine.log());
}

#[test]
fn proxy_port_in_use_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let files = [
        write(
            dir.path(),
            "rollout.yaml",
            &rollout_yaml("busy", port, free_port(), VIGIL, &["--version", "v1"]),
        ),
        write(dir.path(), "templates.yaml", &templates_yaml(4)),
    ];
    let (code, log) = exit_of(Engine::start(dir.path(), &files, admin_addr(), &[]));
    assert_eq!(code, Some(1), "{log}");
    assert!(
        log.contains(&format!("127.0.0.1:{port}")) && log.contains("rollout busy"),
        "names the rollout and the address: {log}"
    );
}

#[test]
fn malformed_file_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let yaml = rollout_yaml(
        "typo",
        free_port(),
        free_port(),
        VIGIL,
        &["--version", "v1"],
    )
    .replace("replicas: 2", "replicas: two");
    let files = [
        write(dir.path(), "broken.yaml", &yaml),
        write(dir.path(), "templates.yaml", &templates_yaml(4)),
    ];
    let (code, log) = exit_of(Engine::start(dir.path(), &files, admin_addr(), &[]));
    assert_eq!(code, Some(2), "{log}");
    assert!(
        log.contains("broken.yaml") && log.contains("spec.replicas"),
        "names the file and the field: {log}"
    );
}

#[test]
fn a_template_without_an_address_needs_prometheus_and_says_so_before_anything_starts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let listen = free_port();
    let files = [
        write(
            dir.path(),
            "rollout.yaml",
            &rollout_yaml("nowhere", listen, free_port(), VIGIL, &["--version", "v1"]),
        ),
        write(dir.path(), "templates.yaml", &templates_without_address()),
    ];
    let (code, log) = exit_of(Engine::start(dir.path(), &files, admin_addr(), &[]));
    assert_eq!(code, Some(2), "{log}");
    assert!(
        log.contains(
            "template e2e-error-rate: metrics[0] (error-rate): provider.prometheus.address: not set"
        ) && log.contains("--prometheus URL"),
        "names the template, the metric, the field and the flag: {log}"
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", listen)).is_err(),
        "nothing was started"
    );
}

#[test]
fn demo_files_pass_lint() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/local-demo");
    let output = Command::new(VIGIL)
        .arg("lint")
        .arg(dir.join("rollout.yaml"))
        .arg(dir.join("blue-green/rollout.yaml"))
        .arg(dir.join("templates.yaml"))
        .output()
        .expect("vigil lint");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
}

/// A smoke test as analysis: a job metric whose process checks the canary's answer through
/// the canary's own address and exits 1 when it is not the release asked for.
const SMOKE_TEMPLATE: &str = r#"apiVersion: vigil.dev/v1alpha1
kind: AnalysisTemplate
metadata:
  name: smoke-test
spec:
  args:
    - name: expect
  metrics:
    - name: smoke
      provider:
        job:
          timeout: 60s
          spec:
            backoffLimit: 0
            template:
              spec:
                restartPolicy: Never
                containers:
                  - name: smoke
                    image: busybox
                    command: ["sh", "-c"]
                    args:
                      - |
                        echo "checking the canary answers $EXPECT"
                        if [ "$EXPECT" != "{{args.expect}}" ]; then
                          echo "smoke test failed: /checkout answered 500" >&2
                          exit 1
                        fi
                        echo "smoke test passed"
                    env:
                      - name: EXPECT
                        value: good
"#;

/// `rollout_yaml`'s release, its analysis step replaced by the smoke test with `expect`.
fn smoke_rollout(name: &str, listen: u16, metrics: u16, version: &str, expect: &str) -> String {
    rollout_yaml(name, listen, metrics, VIGIL, &["--version", version]).replace(
        "              - templateName: e2e-error-rate\n",
        &format!(
            "              - templateName: smoke-test\n            args:\n              - name: expect\n                value: {expect}\n"
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_smoke_test_job_rolls_the_canary_back_and_a_passing_one_promotes() {
    let name = "smoke";
    bounded(Duration::from_secs(180), async {
        let ServingV1 {
            _dir,
            engine,
            client,
            listen,
            metrics,
            v1_hash,
            ..
        } = serving_v1(name).await;
        let bad = smoke_rollout(name, listen, metrics, "v2", "bad");
        assert!(bad.contains("value: bad"), "{bad}");
        let (code, body) =
            post_apply(&client, &engine, format!("{SMOKE_TEMPLATE}---\n{bad}")).await;
        assert_eq!(code, 200, "{body}");
        let rolled_back = wait_for(&client, &engine, name, "v2 rolled back", |v| {
            v.status.phase == Some(RolloutPhase::Degraded) && v.routing.canary_weight == 0
        })
        .await;
        assert_eq!(
            rolled_back.status.stable_revision.as_deref(),
            Some(v1_hash.as_str())
        );
        let run = rolled_back.analysis_runs.last().expect("the smoke run");
        assert_eq!(run.status.phase, Some(AnalysisPhase::Failed), "{run:#?}");
        let reason = run.status.metric_results[0].measurements[0]
            .reason
            .clone()
            .unwrap_or_default();
        assert!(
            reason.contains("exit status 1")
                && reason.contains("smoke test failed: /checkout answered 500"),
            "{reason}"
        );
        for (status, revision, _) in probe(&client, listen, 10).await {
            assert_eq!((status, revision.as_str()), (200, v1_hash.as_str()));
        }

        let good = smoke_rollout(name, listen, metrics, "v3", "good");
        let (code, body) =
            post_apply(&client, &engine, format!("{SMOKE_TEMPLATE}---\n{good}")).await;
        assert_eq!(code, 200, "{body}");
        let promoted = wait_for(&client, &engine, name, "v3 promoted", |v| {
            v.status.phase == Some(RolloutPhase::Healthy)
                && v.status.stable_revision.as_deref() == Some(v.desired_revision.as_str())
                && v.desired_revision != v1_hash
        })
        .await;
        // Runs are listed by name (`<rollout>-<revision>-<attempt>-...`), so find v3's by its
        // revision: `last()` depended on how the two hashes sort (the binary's path is in the
        // pod template, so it changed with the checkout's directory).
        let run = promoted
            .analysis_runs
            .iter()
            .find(|r| r.name.contains(&promoted.desired_revision))
            .expect("the smoke run of v3");
        assert_eq!(
            run.status.phase,
            Some(AnalysisPhase::Successful),
            "{run:#?}"
        );
        let reason = run.status.metric_results[0].measurements[0]
            .reason
            .clone()
            .unwrap_or_default();
        assert!(reason.contains("smoke test passed"), "{reason}");
        for (status, revision, _) in probe(&client, listen, 10).await {
            assert_eq!(
                (status, revision.as_str()),
                (200, promoted.desired_revision.as_str())
            );
        }
    })
    .await;
}

/// A blue-green Rollout of `vigil demo-app` with `app_args`: the proxy serves the active
/// revision on `listen`, the preview on `preview`; the preview is analysed before the switch.
fn blue_green_yaml(
    name: &str,
    listen: u16,
    preview: u16,
    metrics: u16,
    app_args: &[&str],
) -> String {
    let args: Vec<String> = app_args.iter().map(|a| format!("{a:?}")).collect();
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
          args: [{args}]
          readinessProbe:
            httpGet:
              path: /healthz
              port: 8080
  strategy:
    blueGreen:
      local:
        listen: 127.0.0.1:{listen}
        previewListen: 127.0.0.1:{preview}
      previewReplicaCount: 1
      prePromotionAnalysis:
        templates:
          - templateName: e2e-error-rate
      scaleDownDelaySeconds: 2
      abortScaleDownDelaySeconds: 2
"#,
        args = args.join(", ")
    )
}

/// The revisions that answered `n` requests through `port`, all answered 200.
async fn served_by(client: &reqwest::Client, port: u16, n: usize) -> Vec<String> {
    let mut revisions: Vec<String> = probe(client, port, n)
        .await
        .into_iter()
        .map(|(status, revision, body)| {
            assert_eq!(status, 200, "{body}");
            revision
        })
        .collect();
    revisions.sort();
    revisions.dedup();
    revisions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blue_green_release_goes_through_the_preview_listener_then_switches_the_active_one() {
    support::install_crypto_provider();
    let metrics = prometheus().1[2];
    let dir = tempfile::tempdir().expect("temp dir");
    let (listen, preview) = (free_port(), free_port());
    let name = "bluegreen";
    let v1 = blue_green_yaml(name, listen, preview, metrics, &["--version", "v1"]);
    let files = [
        write(dir.path(), "rollout.yaml", &v1),
        write(dir.path(), "templates.yaml", &templates_without_address()),
    ];
    let prometheus_url = prometheus().0.url().to_string();
    let engine = Engine::start(
        dir.path(),
        &files,
        admin_addr(),
        &["--prometheus", &prometheus_url],
    );
    let client = reqwest::Client::new();
    bounded(Duration::from_secs(240), async {
        let first = wait_for(&client, &engine, name, "v1 Healthy", |v| {
            v.status.phase == Some(RolloutPhase::Healthy)
        })
        .await;
        let v1_hash = first.desired_revision.clone();
        // With no release in flight both listeners serve the active revision.
        assert_eq!(served_by(&client, listen, 10).await, vec![v1_hash.clone()]);
        assert_eq!(served_by(&client, preview, 10).await, vec![v1_hash.clone()]);
        let _active_load = start_load(listen);
        let _preview_load = start_load(preview);

        // v2 runs behind the preview listener only, and is analysed there.
        let v2 = blue_green_yaml(name, listen, preview, metrics, &["--version", "v2"]);
        let (code, body) = post_apply(&client, &engine, v2).await;
        assert_eq!(code, 200, "{body}");
        let previewing = wait_for(&client, &engine, name, "v2 analysed in preview", |v| {
            v.status.step.as_deref() == Some("preview")
                && v.status
                    .step_analysis
                    .as_ref()
                    .is_some_and(|run| run.name.ends_with("-pre"))
                && v.routing
                    .canary
                    .as_ref()
                    .is_some_and(|b| !b.addrs.is_empty())
        })
        .await;
        let v2_hash = previewing.desired_revision.clone();
        assert_ne!(v1_hash, v2_hash);
        assert_eq!(served_by(&client, listen, 20).await, vec![v1_hash.clone()]);
        assert_eq!(served_by(&client, preview, 10).await, vec![v2_hash.clone()]);

        // The analysis of the preview passed: the active listener switched to v2.
        let promoted = wait_for(&client, &engine, name, "v2 promoted", |v| {
            v.status.phase == Some(RolloutPhase::Healthy)
                && v.status.stable_revision.as_deref() == Some(v2_hash.as_str())
        })
        .await;
        let run = promoted
            .analysis_runs
            .iter()
            .find(|r| r.name.ends_with("-pre") && r.name.contains(&v2_hash))
            .expect("v2's pre-promotion run");
        assert_eq!(run.status.phase, Some(AnalysisPhase::Successful), "{run:?}");
        assert_eq!(served_by(&client, listen, 20).await, vec![v2_hash.clone()]);
        assert_eq!(served_by(&client, preview, 10).await, vec![v2_hash.clone()]);

        // A bad v3 (30% errors) fails in preview: the active listener never leaves v2.
        let v3 = blue_green_yaml(
            name,
            listen,
            preview,
            metrics,
            &["--version", "v3", "--error-rate", "0.3"],
        );
        let (code, body) = post_apply(&client, &engine, v3).await;
        assert_eq!(code, 200, "{body}");
        let degraded = wait_for(&client, &engine, name, "v3 rejected in preview", |v| {
            v.status.phase == Some(RolloutPhase::Degraded)
        })
        .await;
        let message = degraded.status.message.clone().unwrap_or_default();
        assert!(
            message.contains("pre-promotion analysis failed"),
            "{message}"
        );
        assert!(message.contains("error-rate"), "{message}");
        assert_eq!(
            degraded.status.stable_revision.as_deref(),
            Some(v2_hash.as_str())
        );
        assert_eq!(served_by(&client, listen, 20).await, vec![v2_hash.clone()]);
    })
    .await;
}

/// The AnalysisRuns the state directory keeps (`<run>.run.json`), by name.
fn stored_runs(state_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(state_dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| {
                    let file = e.file_name().to_string_lossy().into_owned();
                    file.strip_suffix(".run.json").map(str::to_owned)
                })
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_beyond_the_history_limit_are_deleted_but_history_and_reports_stay() {
    support::install_crypto_provider();
    let metrics = prometheus().1[3];
    let prometheus_url = prometheus().0.url().to_string();
    let dir = tempfile::tempdir().expect("temp dir");
    let listen = free_port();
    let name = "trim";
    // No successful run kept but the one the status shows.
    let version = |v: &str| {
        rollout_yaml(name, listen, metrics, VIGIL, &["--version", v]).replace(
            "  strategy:\n",
            "  analysis:\n    successfulRunHistoryLimit: 0\n  strategy:\n",
        )
    };
    let files = [
        write(dir.path(), "rollout.yaml", &version("v1")),
        write(dir.path(), "templates.yaml", &templates_without_address()),
    ];
    let engine = Engine::start(
        dir.path(),
        &files,
        admin_addr(),
        &["--prometheus", &prometheus_url],
    );
    let client = reqwest::Client::new();
    bounded(Duration::from_secs(240), async {
        let mut seen = wait_for(&client, &engine, name, "v1 Healthy", |v| {
            v.status.phase == Some(RolloutPhase::Healthy)
        })
        .await;
        let _load = start_load(listen);
        let mut shown = Vec::new();
        for v in ["v2", "v3"] {
            let (code, body) = post_apply(&client, &engine, version(v)).await;
            assert_eq!(code, 200, "{body}");
            let generation = seen.generation;
            seen = wait_for(&client, &engine, name, &format!("{v} promoted"), |view| {
                view.status.phase == Some(RolloutPhase::Healthy)
                    && view.status.stable_revision.as_deref()
                        == Some(view.desired_revision.as_str())
                    && view.generation == generation + 1
            })
            .await;
            let run = seen.status.step_analysis.clone().expect("the run is shown");
            assert_eq!(run.phase, AnalysisPhase::Successful, "{run:?}");
            shown.push(run.name);
        }
        // v2's run went once v3's release no longer showed it; v3's stays (its status shows it).
        let deadline = Instant::now() + WAIT;
        while stored_runs(&engine.state_dir) != shown[1..] {
            assert!(
                Instant::now() < deadline,
                "runs kept: {:?}, wanted only {:?}\n{}",
                stored_runs(&engine.state_dir),
                &shown[1..],
                engine.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // The release history and each release's report do not depend on the runs.
        let output = Command::new(VIGIL)
            .args(["history", name, "--state-dir"])
            .arg(&engine.state_dir)
            .output()
            .expect("vigil history");
        let history = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{history}");
        assert!(
            history.contains("2 releases: 2 promoted, 0 rolled back"),
            "{history}"
        );
        let reports: Vec<_> = std::fs::read_dir(engine.state_dir.join("reports"))
            .expect("reports")
            .filter_map(Result::ok)
            .map(|e| e.path())
            .collect();
        assert_eq!(reports.len(), 2, "{reports:?}");
        for report in reports {
            let html = std::fs::read_to_string(&report).expect("report");
            assert!(
                html.contains("Metric error-rate"),
                "{}: the release's run is in its report",
                report.display()
            );
        }
    })
    .await;
}

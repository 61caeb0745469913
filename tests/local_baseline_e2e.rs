//! End to end on the local platform with a fair baseline (`canary.baseline`): the real
//! `vigil run` binary runs `vigil demo-app` processes for the stable, the canary and the
//! baseline (a fresh copy of the stable) behind its proxy, which splits real HTTP load three
//! ways; a real Prometheus scrapes the proxy every second, and the shipped
//! `sequential-error-counts-baseline` template (with test-sized timings) compares the canary
//! with the baseline.
//!
//! Every wait polls with a generous deadline; every process is killed when its guard drops.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::prometheus::PrometheusServer;
use support::vigil_run::{VIGIL, VigilRun, admin_addr, free_port, start_load};
use url::Url;
use vigil::api::RolloutPhase;

/// The longest any single wait may take before the test fails.
const WAIT: Duration = Duration::from_secs(120);

/// The shipped template with test-sized timings: a look every 3 s over the last 3 s (the
/// windows still equal the interval), and this test's Prometheus.
fn baseline_template(prometheus: &Url) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("analysis-templates/sequential-error-counts-baseline.yaml");
    let shipped = std::fs::read_to_string(path).expect("the shipped template");
    let sized = shipped
        .replace("interval: 1m", "interval: 3s")
        .replace("[1m]", "[3s]")
        .replace(
            "http://prometheus.monitoring.svc:9090",
            prometheus.as_str().trim_end_matches('/'),
        );
    assert!(
        !sized.contains("[1m]") && sized.contains("interval: 3s"),
        "the template's timings were resized: {sized}"
    );
    sized
}

fn rollout_yaml(name: &str, listen: u16, metrics: u16, app_args: &[&str]) -> String {
    let args: Vec<String> = app_args.iter().map(|a| format!("{a:?}")).collect();
    format!(
        r#"apiVersion: vigil.dev/v1alpha1
kind: Rollout
metadata:
  name: {name}
  annotations:
    vigil.dev/metrics-listen: 127.0.0.1:{metrics}
spec:
  replicas: 4
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
    canary:
      trafficRouting:
        local:
          listen: 127.0.0.1:{listen}
      abortScaleDownDelaySeconds: 2
      baseline:
        enabled: true
      steps:
        - setWeight: 25
        - analysis:
            templates:
              - templateName: sequential-error-counts-baseline
        - setWeight: 50
"#,
        args = args.join(", ")
    )
}

async fn post_apply(client: &reqwest::Client, engine: &VigilRun, yaml: String) -> (u16, String) {
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

/// Requests Prometheus counted for `revision` (served, not mirrored).
async fn requests_of(client: &reqwest::Client, prometheus: &Url, revision: &str) -> f64 {
    let query = format!("sum(http_requests_total{{revision=\"{revision}\"}})");
    let Ok(response) = client
        .get(format!("{prometheus}api/v1/query"))
        .query(&[("query", query.as_str())])
        .timeout(Duration::from_secs(5))
        .send()
        .await
    else {
        return 0.0;
    };
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    body["data"]["result"][0]["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_baseline_template_compares_canary_and_baseline_and_rolls_back_a_bad_canary() {
    support::install_crypto_provider();
    let metrics = free_port();
    let prometheus = PrometheusServer::start_with_config(&format!(
        "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
         scrape_configs:\n  - job_name: vigil\n    static_configs: [{{targets: ['127.0.0.1:{metrics}']}}]\n"
    ));
    let prometheus_url = prometheus.url().clone();
    let dir = tempfile::tempdir().expect("temp dir");
    let listen = free_port();
    let name = "fair";
    let files = [
        dir.path().join("rollout.yaml"),
        dir.path().join("template.yaml"),
    ];
    std::fs::write(
        &files[0],
        rollout_yaml(name, listen, metrics, &["--version", "v1"]),
    )
    .expect("write rollout");
    std::fs::write(&files[1], baseline_template(&prometheus_url)).expect("write template");
    let engine = VigilRun::start(dir.path(), &files, admin_addr(), &[]);
    let client = reqwest::Client::new();
    let body = async {
        let first = engine
            .wait_for(&client, name, "v1 Healthy", WAIT, |v| {
                v.status.phase == Some(RolloutPhase::Healthy)
            })
            .await;
        let v1 = first.status.stable_revision.clone().expect("stable");
        let baseline = format!("{v1}-baseline");
        let _load = start_load(listen, 60.0);

        // A canary answering 30 % of its requests with 500.
        let bad = rollout_yaml(
            name,
            listen,
            metrics,
            &["--version", "v2", "--error-rate", "0.3"],
        );
        let (code, text) = post_apply(&client, &engine, bad).await;
        assert_eq!(code, 200, "{text}");

        // The analysis step: the proxy splits three ways, the baseline (a fresh v1) taking the
        // canary's 25 % from the stable.
        let split = engine
            .wait_for(&client, name, "the three-way split", WAIT, |v| {
                v.routing.baseline_weight == 25 && v.routing.canary_weight == 25
            })
            .await;
        let routed = split.routing.baseline.as_ref().map(|b| b.revision.clone());
        assert_eq!(
            routed.as_deref(),
            Some(baseline.as_str()),
            "{:?}",
            split.routing
        );
        assert_eq!(
            split.status.current_step_index,
            Some(1),
            "{:#?}",
            split.status
        );

        // The template compares canary and baseline: the bad canary is rolled back.
        let degraded = engine
            .wait_for(&client, name, "v2 rolled back", WAIT, |v| {
                v.status.phase == Some(RolloutPhase::Degraded)
            })
            .await;
        let message = degraded.status.message.clone().unwrap_or_default();
        assert!(
            message.contains("errors-vs-baseline"),
            "the message names the metric that compared with the baseline: {message}"
        );
        assert_eq!(
            degraded.status.stable_revision.as_deref(),
            Some(v1.as_str())
        );

        // The baseline took real traffic while it ran, then lost it and its processes.
        let deadline = Instant::now() + WAIT;
        while requests_of(&client, &prometheus_url, &baseline).await <= 0.0 {
            assert!(
                Instant::now() < deadline,
                "Prometheus never saw a request served by the baseline"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        engine
            .wait_for(&client, name, "only the stable left", WAIT, |v| {
                v.routing.baseline_weight == 0
                    && v.routing.canary_weight == 0
                    && v.status.replicas == Some(4)
            })
            .await;
    };
    tokio::time::timeout(Duration::from_secs(300), body)
        .await
        .expect("test took too long");
}

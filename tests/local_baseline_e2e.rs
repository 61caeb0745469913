//! End to end on the local platform with a fair baseline (`canary.baseline`): the real
//! `vigil run` binary runs `vigil demo-app` processes for the stable, the canary and the
//! baseline (a fresh copy of the stable) behind its proxy, which splits real HTTP load three
//! ways; a real Prometheus scrapes the proxy every second, and the shipped
//! `sequential-error-counts-baseline` template (with test-sized timings) compares the canary
//! with the baseline.
//!
//! Every wait polls with a generous deadline; every process is killed when its guard drops.

mod support;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::prometheus::PrometheusServer;
use tokio::sync::oneshot;
use url::Url;
use vigil::api::RolloutPhase;
use vigil::platform::local::admin::ADMIN_TOKEN_FILE;
use vigil::platform::local::engine::RolloutView;
use vigil::platform::local::loadgen::{LoadConfig, run_load};

const VIGIL: &str = env!("CARGO_BIN_EXE_vigil");

/// The longest any single wait may take before the test fails.
const WAIT: Duration = Duration::from_secs(120);

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

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

/// A running `vigil run`; stopped with SIGTERM (then SIGKILL) when dropped.
struct Engine {
    child: Option<Child>,
    admin: SocketAddr,
    state_dir: PathBuf,
    log: PathBuf,
}

impl Engine {
    fn start(dir: &Path, files: &[PathBuf]) -> Engine {
        let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let log = dir.join("engine.log");
        let log_file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(VIGIL)
            .arg("run")
            .args(files)
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

async fn get_view(client: &reqwest::Client, engine: &Engine, name: &str) -> Option<RolloutView> {
    let response = client
        .get(format!("http://{}/rollouts/{name}", engine.admin))
        .bearer_auth(engine.token())
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
    client: &reqwest::Client,
    engine: &Engine,
    name: &str,
    what: &str,
    done: impl Fn(&RolloutView) -> bool,
) -> RolloutView {
    let deadline = Instant::now() + WAIT;
    let mut last = None;
    while Instant::now() < deadline {
        if let Some(view) = get_view(client, engine, name).await {
            if done(&view) {
                return view;
            }
            last = Some(view);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!(
        "timed out waiting for {what}; last view: {:#?}\nengine log:\n{}",
        last.map(|v| (v.status, v.routing)),
        engine.log()
    );
}

/// Steady load through the proxy until the returned sender is dropped.
fn start_load(listen: u16) -> oneshot::Sender<()> {
    let (stop, stopped) = oneshot::channel::<()>();
    let target = Url::parse(&format!("http://127.0.0.1:{listen}/")).expect("url");
    tokio::spawn(async move {
        let config = LoadConfig::new(target, 60.0, Duration::from_secs(600));
        let _ = run_load(config, async move {
            let _ = stopped.await;
        })
        .await;
    });
    stop
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
    let engine = Engine::start(dir.path(), &files);
    let client = reqwest::Client::new();
    let body = async {
        let first = wait_for(&client, &engine, name, "v1 Healthy", |v| {
            v.status.phase == Some(RolloutPhase::Healthy)
        })
        .await;
        let v1 = first.status.stable_revision.clone().expect("stable");
        let baseline = format!("{v1}-baseline");
        let _load = start_load(listen);

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
        let split = wait_for(&client, &engine, name, "the three-way split", |v| {
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
        let degraded = wait_for(&client, &engine, name, "v2 rolled back", |v| {
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
        wait_for(&client, &engine, name, "only the stable left", |v| {
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

//! `minReadySeconds` on the local platform, end to end: the real `vigil run` binary releases
//! real `vigil demo-app` processes. A canary process that passes its readiness probe is
//! routed to at once (as a Service would), but counts as ready for the release (its weight
//! raised, its step completed) only once it has been ready for `minReadySeconds`.
//!
//! Every wait polls the admin endpoint with a generous deadline; nothing sleeps a fixed time.

mod support;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vigil::api::RolloutPhase;
use vigil::platform::local::admin::ADMIN_TOKEN_FILE;
use vigil::platform::local::engine::RolloutView;

const VIGIL: &str = env!("CARGO_BIN_EXE_vigil");

/// The longest any single wait may take before the test fails.
const WAIT: Duration = Duration::from_secs(90);

/// The Rollout's `minReadySeconds`.
const MIN_READY: u64 = 10;

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

fn rollout_yaml(listen: u16, metrics: u16, version: &str) -> String {
    format!(
        r#"apiVersion: vigil.dev/v1alpha1
kind: Rollout
metadata:
  name: shop
  annotations:
    vigil.dev/metrics-listen: 127.0.0.1:{metrics}
spec:
  replicas: 2
  minReadySeconds: {MIN_READY}
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
      steps:
        - setWeight: 50
        - pause: {{}}
"#
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

/// The canary's processes that the proxy routes to (ready by their probe).
fn routed_canary(view: &RolloutView) -> usize {
    view.routing
        .canary
        .as_ref()
        .filter(|c| Some(&c.revision) == view.status.canary_revision.as_ref())
        .map_or(0, |c| c.addrs.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_process_counts_as_ready_only_after_min_ready_seconds() {
    support::install_crypto_provider();
    let dir = tempfile::tempdir().expect("temp dir");
    let client = reqwest::Client::new();
    let (listen, metrics) = (free_port(), free_port());
    let file = dir.path().join("rollout.yaml");
    std::fs::write(&file, rollout_yaml(listen, metrics, "v1")).expect("write rollout");
    let engine = Engine::start(dir.path(), &file);
    engine
        .wait_for(&client, "shop", "v1 Healthy", |v| {
            v.status.phase == Some(RolloutPhase::Healthy) && v.status.canary_revision.is_none()
        })
        .await;

    engine
        .post(&client, "/apply", Some(rollout_yaml(listen, metrics, "v2")))
        .await;
    // Its process is ready and routed, but the weight stays 0 ...
    let routed = engine
        .wait_for(&client, "shop", "the canary process routed", |v| {
            routed_canary(v) == 1
        })
        .await;
    let routed_at = Instant::now();
    assert_eq!(
        routed.status.canary_weight, 0,
        "{:?}",
        routed.status.message
    );
    // ... until it has been ready for minReadySeconds: then the step's 50 % and the pause.
    let paused = engine
        .wait_for(&client, "shop", "the canary at 50 %", |v| {
            v.status.canary_weight == 50 && v.status.phase == Some(RolloutPhase::Paused)
        })
        .await;
    assert_eq!(paused.routing.canary_weight, 50);
    // A lower bound only: a slow machine makes the wait longer, never shorter. Without
    // minReadySeconds the weight follows the probe within a tick.
    let held = routed_at.elapsed();
    assert!(
        held >= Duration::from_secs(MIN_READY / 2),
        "the weight was raised {held:?} after the process was routed, minReadySeconds is {MIN_READY}"
    );
}

//! A running `vigil run` for the local end-to-end tests: started on a free admin port with its
//! state and log in a test's temp dir, its admin API read with the token it wrote, stopped with
//! SIGTERM (then SIGKILL) when dropped. Also the steady load those tests send through a proxy.

use std::ffi::OsStr;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use url::Url;
use vigil::platform::local::admin::ADMIN_TOKEN_FILE;
use vigil::platform::local::engine::RolloutView;
use vigil::platform::local::loadgen::{LoadConfig, run_load};

/// The `vigil` binary under test.
pub const VIGIL: &str = env!("CARGO_BIN_EXE_vigil");

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

/// A free loopback address for an engine's admin API.
pub fn admin_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// A running `vigil run`; stopped with SIGTERM (then SIGKILL) when dropped.
pub struct VigilRun {
    /// The process (None once a test took it, e.g. to wait for its exit).
    pub child: Option<Child>,
    /// Its admin API.
    pub admin: SocketAddr,
    /// Its `--state-dir`.
    pub state_dir: PathBuf,
    /// The file its stderr goes to.
    pub log: PathBuf,
}

impl VigilRun {
    /// `vigil run FILES... EXTRA...` with its state in `dir/state` and its admin API on
    /// `admin` (a restarted engine keeps its address; [`admin_addr`] for a fresh one).
    pub fn start(dir: &Path, files: &[PathBuf], admin: SocketAddr, extra: &[&str]) -> VigilRun {
        let args: Vec<&OsStr> = files
            .iter()
            .map(|file| file.as_os_str())
            .chain(extra.iter().map(OsStr::new))
            .collect();
        VigilRun::start_with_env(dir, &args, admin, &[])
    }

    /// `vigil run ARGS` the same way, with `env` added (`RUST_LOG` is info unless it sets it).
    pub fn start_with_env<A: AsRef<OsStr>>(
        dir: &Path,
        args: &[A],
        admin: SocketAddr,
        env: &[(&str, String)],
    ) -> VigilRun {
        // One log per start: a test may run several engines on one state dir.
        let log = dir.join(format!("engine-{}.log", free_port()));
        let log_file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(VIGIL)
            .arg("run")
            .args(args)
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg("--admin")
            .arg(admin.to_string())
            .env("RUST_LOG", "info")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("start vigil run");
        VigilRun {
            child: Some(child),
            admin,
            state_dir: dir.join("state"),
            log,
        }
    }

    /// The admin token the engine wrote at start (empty until it did).
    pub fn token(&self) -> String {
        std::fs::read_to_string(self.state_dir.join(ADMIN_TOKEN_FILE))
            .unwrap_or_default()
            .trim()
            .to_owned()
    }

    /// The whole log so far.
    pub fn full_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last 40 lines of the log.
    pub fn log(&self) -> String {
        let text = self.full_log();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// SIGKILL: no chance to clean up, as in a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The Rollout `name` as the admin API shows it (None while it does not answer).
    pub async fn view(&self, client: &reqwest::Client, name: &str) -> Option<RolloutView> {
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

    /// Polls the Rollout until `done` holds; fails after `within` with the last view and the
    /// engine's log.
    pub async fn wait_for(
        &self,
        client: &reqwest::Client,
        name: &str,
        what: &str,
        within: Duration,
        done: impl Fn(&RolloutView) -> bool,
    ) -> RolloutView {
        let deadline = Instant::now() + within;
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
            "timed out waiting for {what}; last view: {:#?}\nengine log:\n{}",
            last.map(|v| (v.status, v.routing)),
            self.log()
        );
    }

    /// POSTs to the admin API (`body` as YAML) and asserts it answered 200.
    pub async fn post(&self, client: &reqwest::Client, path: &str, body: Option<String>) {
        let mut request = client
            .post(format!("http://{}{path}", self.admin))
            .bearer_auth(self.token())
            .timeout(Duration::from_secs(10));
        if let Some(body) = body {
            request = request
                .header("content-type", "application/yaml")
                .body(body);
        }
        let response = request.send().await.expect("admin request");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        assert_eq!(status, 200, "{path}: {text}");
    }
}

impl Drop for VigilRun {
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

/// Steady load of `per_second` GET requests through the proxy on `listen` until the returned
/// sender is dropped.
pub fn start_load(listen: u16, per_second: f64) -> oneshot::Sender<()> {
    let (stop, stopped) = oneshot::channel::<()>();
    let target = Url::parse(&format!("http://127.0.0.1:{listen}/")).expect("url");
    tokio::spawn(async move {
        let config = LoadConfig::new(target, per_second, Duration::from_secs(600));
        let _ = run_load(config, async move {
            let _ = stopped.await;
        })
        .await;
    });
    stop
}

//! `vigil demo`: a real canary release on this machine, in a few minutes.
//!
//! It starts a real Prometheus (scraping the proxy's metrics every second), the demo app v1 as
//! stable (2 processes) behind vigil's weighted proxy, and a steady load of 50 requests/s; then
//! it releases v2 (healthy: promoted step by step) and v3 (5% errors and slower: rolled back
//! by itself at its first analysis), printing a line at every change, and ends with a summary.
//! The Rollout and templates are the ones in `deploy/local-demo/`, with free ports.

use std::path::Path;
use std::time::{Duration, Instant};

use url::Url;

use crate::api::{AnalysisPhase, RolloutPhase};
use crate::platform::local::engine::{
    Engine, EngineConfig, EngineError, EngineHandle, RolloutView, Sources, progress_line,
};
use crate::platform::local::loadgen::{LoadConfig, run_load};
use crate::platform::local::prometheus::{Prometheus, PrometheusError, scrape_config};
use crate::platform::local::supervisor::SupervisorConfig;

const ROLLOUT_YAML: &str = include_str!("../../deploy/local-demo/rollout.yaml");
const TEMPLATES_YAML: &str = include_str!("../../deploy/local-demo/templates.yaml");
const NAME: &str = "demo";
/// Requests per second through the proxy.
const LOAD_PER_SEC: f64 = 50.0;
/// The longest one release may take before the demo gives up.
const RELEASE_LIMIT: Duration = Duration::from_secs(300);

/// Arguments of `vigil demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {}

/// Why the demo stopped.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// Prometheus could not start (not installed: run `make demo`).
    #[error(transparent)]
    StartPrometheus(#[from] PrometheusError),
    /// The engine failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The temp state dir or the binary's path.
    #[error("failed to prepare the demo: {0}")]
    Prepare(String),
    /// A release did not reach the phase expected in time.
    #[error("{what} did not happen within {limit:?}; last status: {last}")]
    WaitRelease {
        /// What was awaited.
        what: String,
        /// The limit.
        limit: Duration,
        /// The last progress line.
        last: String,
    },
    /// Ctrl-C.
    #[error("interrupted")]
    Interrupted,
}

/// Runs `vigil demo` and returns the exit code.
pub fn run(_args: &DemoArgs) -> i32 {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("vigil demo: failed to start the async runtime: {error}");
            return 1;
        }
    };
    match runtime.block_on(demo()) {
        Ok(()) => 0,
        Err(error) => {
            eprintln!("vigil demo: {error}");
            1
        }
    }
}

fn free_port() -> Result<u16, DemoError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| DemoError::Prepare(format!("pick a free port: {e}")))
}

/// The demo Rollout with this binary as the command, free ports and the app's arguments.
fn rollout(exe: &Path, listen: u16, metrics: u16, app_args: &str) -> String {
    ROLLOUT_YAML
        .replace(
            "command: [vigil, demo-app]",
            &format!("command: [{:?}, demo-app]", exe.display().to_string()),
        )
        .replace("args: [--version, v1]", &format!("args: [{app_args}]"))
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{listen}"))
        .replace("127.0.0.1:9464", &format!("127.0.0.1:{metrics}"))
}

fn parse(text: &str) -> Result<Sources, DemoError> {
    Ok(Sources::parse(
        Path::new("deploy/local-demo/rollout.yaml"),
        text,
    )?)
}

async fn demo() -> Result<(), DemoError> {
    let started = Instant::now();
    let exe = std::env::current_exe()
        .map_err(|e| DemoError::Prepare(format!("find the vigil binary: {e}")))?;
    let (listen, metrics) = (free_port()?, free_port()?);
    let metrics_addr = std::net::SocketAddr::from(([127, 0, 0, 1], metrics));
    crate::outln!("vigil demo: a canary release on this machine, judged by a real Prometheus\n");
    let config = scrape_config("vigil-demo", &[metrics_addr]);
    let prometheus = tokio::task::spawn_blocking(move || Prometheus::start(&config))
        .await
        .map_err(|e| DemoError::Prepare(e.to_string()))??;
    crate::outln!(
        "  prometheus   {} (scrapes the proxy's metrics every 1 s)",
        prometheus.url()
    );
    let state = tempfile::Builder::new()
        .prefix("vigil-demo-state-")
        .tempdir()
        .map_err(|e| DemoError::Prepare(format!("create the state dir: {e}")))?;
    let mut sources = parse(&rollout(&exe, listen, metrics, "--version, v1"))?;
    sources.merge(Sources::parse(
        Path::new("deploy/local-demo/templates.yaml"),
        TEMPLATES_YAML,
    )?);
    let (engine, task) = Engine::start(
        EngineConfig {
            state_dir: state.path().to_owned(),
            prometheus: Some(prometheus.url().clone()),
            supervisor: SupervisorConfig::default(),
            notifier: Default::default(),
            outbox: None,
            allow_link_local_egress: false,
        },
        sources,
    )
    .await?;
    crate::outln!("  proxy        http://127.0.0.1:{listen}/  (metrics on {metrics_addr})");
    crate::outln!("  load         {LOAD_PER_SEC} requests/s through the proxy");
    crate::outln!(
        "  rollout      deploy/local-demo/rollout.yaml: 20% → analysis → 50% → analysis → 100%\n"
    );
    let outcome = tokio::select! {
        outcome = releases(&engine, &exe, listen, metrics, started) => outcome,
        _ = tokio::signal::ctrl_c() => Err(DemoError::Interrupted),
    };
    engine.shutdown().await;
    let _ = task.await;
    drop(prometheus);
    if outcome.is_ok() {
        keep_reports(state.path());
    }
    outcome
}

async fn releases(
    engine: &EngineHandle,
    exe: &Path,
    listen: u16,
    metrics: u16,
    started: Instant,
) -> Result<(), DemoError> {
    let clock = Clock(started);
    let client = reqwest::Client::new();
    crate::outln!("== v1: the first version, deployed as stable");
    let v1 = follow(engine, &clock, "v1 becoming Healthy", |v| {
        v.status.phase == Some(RolloutPhase::Healthy)
    })
    .await?;
    let target = Url::parse(&format!("http://127.0.0.1:{listen}/"))
        .map_err(|e| DemoError::Prepare(e.to_string()))?;
    let (stop_load, load_stopped) = tokio::sync::oneshot::channel::<()>();
    let load = tokio::spawn(run_load(
        LoadConfig::new(target, LOAD_PER_SEC, Duration::from_secs(3600)),
        async move {
            let _ = load_stopped.await;
        },
    ));

    crate::outln!("\n== v2: a healthy release");
    let v2_started = Instant::now();
    engine
        .apply(parse(&rollout(exe, listen, metrics, "--version, v2"))?)
        .await?;
    let v2 = follow(engine, &clock, "v2 being promoted", |v| {
        v.generation == v1.generation + 1
            && v.status.phase == Some(RolloutPhase::Healthy)
            && v.status.stable_revision.as_deref() == Some(v.desired_revision.as_str())
    })
    .await?;
    let v2_took = v2_started.elapsed();

    crate::outln!("\n== v3: 5% errors and 150 ms slower");
    let v3_started = Instant::now();
    engine
        .apply(parse(&rollout(
            exe,
            listen,
            metrics,
            // v1 and v2 answer in 20 ms on average (the demo app's default): 150 ms slower.
            "--version, v3, --error-rate, \"0.05\", --latency-ms, \"170\"",
        ))?)
        .await?;
    let mut first_request: Option<Instant> = None;
    let mut back_on_stable: Option<Instant> = None;
    let v3_hash = engine
        .get(NAME)
        .map(|v| v.desired_revision)
        .unwrap_or_default();
    let metrics_url = format!("http://127.0.0.1:{metrics}/metrics");
    let mut printer = Printer::default();
    let deadline = Instant::now() + RELEASE_LIMIT;
    let v3 = loop {
        let view = engine
            .get(NAME)
            .ok_or_else(|| DemoError::Prepare("rollout gone".into()))?;
        printer.show(&clock, &view);
        if first_request.is_none() && served(&client, &metrics_url, &v3_hash).await.0 > 0 {
            first_request = Some(Instant::now());
        }
        if first_request.is_some()
            && back_on_stable.is_none()
            && (view.routing.canary_weight == 0
                || view.routing.canary.as_ref().map(|b| &b.revision) != Some(&v3_hash))
        {
            back_on_stable = Some(Instant::now());
        }
        if view.status.phase == Some(RolloutPhase::Degraded) && back_on_stable.is_some() {
            break view;
        }
        if view.status.phase == Some(RolloutPhase::Healthy)
            && view.status.stable_revision.as_deref() == Some(v3_hash.as_str())
        {
            break view;
        }
        if Instant::now() > deadline {
            return Err(DemoError::WaitRelease {
                what: "v3's rollback".into(),
                limit: RELEASE_LIMIT,
                last: progress_line(&view),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let v3_took = v3_started.elapsed();
    // Requests in flight when traffic moved back still finish on v3: wait for them.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (v3_requests, v3_errors) = served(&client, &metrics_url, &v3_hash).await;
    let _ = stop_load.send(());
    let load = load.await.ok().and_then(Result::ok);

    crate::outln!("\n== summary");
    summarize(&v2, "v2", v2_took);
    summarize(&v3, "v3", v3_took);
    if let (Some(first), Some(back)) = (first_request, back_on_stable) {
        crate::outln!(
            "  v3: {:.1} s from its first request to all traffic back on stable; it served {} \
             requests ({} errors)",
            back.duration_since(first).as_secs_f64(),
            v3_requests,
            v3_errors
        );
    }
    if let Some(stats) = load {
        crate::outln!(
            "  load: {} requests sent, {} server errors, {} transport errors",
            stats.sent,
            stats.server_errors(),
            stats.transport_errors
        );
    }
    crate::outln!("  the demo took {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// Copies the release reports out of the demo's state directory (a temporary one, removed at
/// the end) into a folder that stays, and prints their paths.
fn keep_reports(state_dir: &Path) {
    let reports = state_dir.join(crate::platform::local::engine::REPORTS_DIR);
    let Ok(entries) = std::fs::read_dir(&reports) else {
        return;
    };
    let kept = match tempfile::Builder::new()
        .prefix("vigil-demo-reports-")
        .tempdir()
    {
        Ok(dir) => dir.keep(),
        Err(error) => {
            crate::outln!("  (the release reports could not be kept: {error})");
            return;
        }
    };
    let mut names: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    names.sort();
    for name in names {
        let target = kept.join(&name);
        match std::fs::copy(reports.join(&name), &target) {
            Ok(_) => crate::outln!("  report: {}", target.display()),
            Err(error) => crate::outln!("  (report {} not kept: {error})", name.to_string_lossy()),
        }
    }
}

fn summarize(view: &RolloutView, label: &str, took: Duration) {
    let phase = view.status.phase.unwrap_or_default();
    crate::outln!(
        "  {label} ({}): {phase:?} after {:.0} s — {}",
        view.desired_revision,
        took.as_secs_f64(),
        view.status.message.as_deref().unwrap_or("")
    );
    for run in view
        .analysis_runs
        .iter()
        .filter(|r| r.name.contains(&view.desired_revision))
    {
        let step = run.name.rsplit('-').next().unwrap_or_default();
        crate::outln!(
            "    {step}: {:?}",
            run.status.phase.unwrap_or(AnalysisPhase::Pending)
        );
        for metric in &run.status.metric_results {
            let last = metric.measurements.last();
            crate::outln!(
                "      {:<12} {:?} value {} — {}",
                metric.name,
                metric.phase,
                last.and_then(|m| m.value.as_deref()).unwrap_or("-"),
                last.and_then(|m| m.reason.as_deref())
                    .or(metric.message.as_deref())
                    .unwrap_or("")
            );
        }
    }
}

/// Requests (and 5xx) the proxy counted for `revision`.
async fn served(client: &reqwest::Client, url: &str, revision: &str) -> (u64, u64) {
    let Ok(response) = client.get(url).timeout(Duration::from_secs(2)).send().await else {
        return (0, 0);
    };
    let text = response.text().await.unwrap_or_default();
    let needle = format!("revision=\"{revision}\"");
    let mut total = 0.0;
    let mut errors = 0.0;
    for line in text.lines() {
        if !line.starts_with("http_requests_total{") || !line.contains(&needle) {
            continue;
        }
        let value: f64 = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        total += value;
        if line.contains("code=\"5") {
            errors += value;
        }
    }
    (total as u64, errors as u64)
}

struct Clock(Instant);

impl Clock {
    fn stamp(&self) -> String {
        format!("[{:>6.1}s]", self.0.elapsed().as_secs_f64())
    }
}

#[derive(Default)]
struct Printer {
    last: Option<String>,
}

impl Printer {
    fn show(&mut self, clock: &Clock, view: &RolloutView) {
        let line = progress_line(view);
        if self.last.as_ref() != Some(&line) {
            crate::outln!("{} {line}", clock.stamp());
            self.last = Some(line);
        }
    }
}

/// Prints a line at every change until `done` holds.
async fn follow(
    engine: &EngineHandle,
    clock: &Clock,
    what: &str,
    done: impl Fn(&RolloutView) -> bool,
) -> Result<RolloutView, DemoError> {
    let deadline = Instant::now() + RELEASE_LIMIT;
    let mut printer = Printer::default();
    loop {
        if let Some(view) = engine.get(NAME) {
            printer.show(clock, &view);
            if done(&view) {
                return Ok(view);
            }
            if Instant::now() > deadline {
                return Err(DemoError::WaitRelease {
                    what: what.to_owned(),
                    limit: RELEASE_LIMIT,
                    last: progress_line(&view),
                });
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

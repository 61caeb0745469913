//! Scale: N Rollouts (default 10,000) fed through the in-process Kubernetes API test server to
//! the real `vigil controller` binary, measuring what the controller costs and what it costs
//! the cluster (requests counted at the API server by verb, resource and response code):
//!
//! 1. **initial**: every Rollout created, controller started; time until all are Healthy,
//!    resident memory, requests.
//! 2. **steady**: all Healthy; requests per minute over a window.
//! 3. **release**: every Rollout's template changed at once; requests per Rollout until all
//!    are Healthy on the new revision (one `setWeight` and, unless switched off, one analysis
//!    step judged by a real Prometheus on 127.0.0.1, since measurements wake reconciles).
//! 4. **restart**: the controller killed and started again; requests until it is quiet.
//! 5. **churn** (optional): a share of the Rollouts released every minute for N minutes,
//!    resident memory sampled every minute beside what the caches mirror (the cluster's
//!    ReplicaSets and AnalysisRuns) and how many Rollouts are settled (whether releases keep
//!    up), so growth can be told apart from a leak.
//!
//! Reconcile latency p50/p90/p99 comes from the controller's own histograms, of Rollout and of
//! AnalysisRun reconciles apart, phase by phase: initial and steady, release, churn (a release
//! of every Rollout at once is a burst that queues on the shared cores; churn is the pace of a
//! busy cluster).
//!
//! `cargo bench --bench controller_scale`; settings by environment:
//! - `VIGIL_BENCH_ROLLOUTS` (10000): the Rollouts this controller owns.
//! - `VIGIL_BENCH_FOREIGN_ROLLOUTS` (0): more Rollouts in the same namespace owned by other
//!   shards (`vigil.dev/shard=1..4`); the measured controller runs with
//!   `--selector vigil.dev/shard=0`. A first controller (`--selector vigil.dev/shard!=0`)
//!   carries the foreign ones to Healthy (creating their ReplicaSets) and is stopped before
//!   the measurement, as the other shards' controllers would have done.
//! - `VIGIL_BENCH_ANALYSIS` (1): 0 drops the analysis step.
//! - `VIGIL_BENCH_STEADY_SECONDS` (60): the steady-state window.
//! - `VIGIL_BENCH_CHURN_MINUTES` (0) and `VIGIL_BENCH_CHURN_SHARE` (0.1): the churn phase.
//! - `VIGIL_BENCH_HISTORY` (unset: the Rollout defaults, 10 ReplicaSets and 5 runs of each
//!   kind): each Rollout's `revisionHistoryLimit` and both AnalysisRun history limits, so a
//!   churn can reach a cluster that stops growing (1: flat after one release per Rollout).
//! - `VIGIL_BENCH_CONCURRENCY` (10, the controller's default): its `--concurrency`.
//! - `VIGIL_BENCH_CONTROLLER`: another `vigil` binary to measure (e.g. a copy of an older
//!   build, for before/after figures from the same bench).

#[allow(dead_code)]
#[path = "../tests/support/prometheus.rs"]
mod prometheus;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use vigil::testing::apiserver::{ApiServer, RequestCounts};

const ROLLOUTS: &str = "vigil.dev/v1alpha1/rollouts";
const REPLICASETS: &str = "apps/v1/replicasets";
const ANALYSIS_RUNS: &str = "vigil.dev/v1alpha1/analysisruns";
const NAMESPACE: &str = "default";
const SHARD_LABEL: &str = "vigil.dev/shard";
const FOREIGN_SHARDS: usize = 4;
/// No phase of a run may take longer; a timeout is reported, not hidden.
const PHASE_DEADLINE: Duration = Duration::from_secs(3600);
/// The controller counts as settled after a restart once it sent nothing (watches aside) for
/// this long.
const QUIET: Duration = Duration::from_secs(10);

struct Settings {
    rollouts: usize,
    foreign: usize,
    analysis: bool,
    steady: Duration,
    churn_minutes: u64,
    churn_share: f64,
    history: Option<i32>,
}

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

impl Settings {
    fn from_env() -> Self {
        Self {
            rollouts: env("VIGIL_BENCH_ROLLOUTS", 10_000),
            foreign: env("VIGIL_BENCH_FOREIGN_ROLLOUTS", 0),
            analysis: env("VIGIL_BENCH_ANALYSIS", 1) != 0,
            steady: Duration::from_secs(env("VIGIL_BENCH_STEADY_SECONDS", 60)),
            churn_minutes: env("VIGIL_BENCH_CHURN_MINUTES", 0),
            churn_share: env("VIGIL_BENCH_CHURN_SHARE", 0.1_f64).clamp(0.0, 1.0),
            history: std::env::var("VIGIL_BENCH_HISTORY")
                .ok()
                .and_then(|v| v.parse().ok()),
        }
    }

    fn sharded(&self) -> bool {
        self.foreign > 0
    }
}

fn name(i: usize) -> String {
    format!("app-{i}")
}

fn template(name: &str, image: &str) -> Value {
    json!({"metadata": {"labels": {"app": name}},
           "spec": {"containers": [{"name": "app", "image": image}]}})
}

fn rollout(i: usize, shard: Option<usize>, settings: &Settings) -> Value {
    let name = name(i);
    let mut steps = vec![json!({"setWeight": 50})];
    if settings.analysis {
        steps.push(json!({"analysis": {"templates": [{"templateName": "bench"}]}}));
    }
    let mut doc = json!({
        "apiVersion": "vigil.dev/v1alpha1", "kind": "Rollout",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": name}},
            "template": template(&name, "app:1"),
            "strategy": {"canary": {"steps": steps}}
        }
    });
    if let Some(shard) = shard {
        doc["metadata"]["labels"] = json!({SHARD_LABEL: shard.to_string()});
    }
    if let Some(limit) = settings.history {
        doc["spec"]["revisionHistoryLimit"] = json!(limit);
        doc["spec"]["analysis"] = json!({"successfulRunHistoryLimit": limit,
                                         "unsuccessfulRunHistoryLimit": limit});
    }
    doc
}

/// One measurement of a constant: cheap for Prometheus, but a real query, answer and judge.
fn analysis_template(prometheus: &str) -> Value {
    json!({
        "apiVersion": "vigil.dev/v1alpha1", "kind": "AnalysisTemplate",
        "metadata": {"name": "bench", "namespace": NAMESPACE},
        "spec": {"metrics": [{
            "name": "error-ratio",
            "successCondition": "result < 0.05",
            "provider": {"prometheus": {"address": prometheus, "query": "vector(0.01)"}}
        }]}
    })
}

/// Changes the pod template of Rollout `i` (a new revision: a release starts).
fn release(server: &ApiServer, i: usize, image: &str) {
    let name = name(i);
    let patch = json!({
        "apiVersion": "vigil.dev/v1alpha1", "kind": "Rollout",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"template": template(&name, image)}
    });
    server
        .apply_json(ROLLOUTS, "bench", patch)
        .expect("change the pod template");
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// A running `vigil controller`.
struct Controller {
    child: Child,
    metrics_port: u16,
}

impl Controller {
    fn start(kubeconfig: &Path, selector: Option<&str>) -> Self {
        let metrics_port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let binary = std::env::var_os("VIGIL_BENCH_CONTROLLER")
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_vigil").into());
        let concurrency: u16 = env("VIGIL_BENCH_CONCURRENCY", 10);
        let mut command = Command::new(binary);
        command
            .args(["controller", "--no-leader-election", "--concurrency"])
            .arg(concurrency.to_string())
            .arg("--metrics-addr")
            .arg(format!("127.0.0.1:{metrics_port}"));
        if let Some(selector) = selector {
            command.args(["--selector", selector]);
        }
        let child = command
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .spawn()
            .expect("start the controller");
        Self {
            child,
            metrics_port,
        }
    }

    fn rss_mib(&self) -> u64 {
        rss_kib(self.child.id(), "VmRSS:") / 1024
    }

    fn peak_rss_mib(&self) -> u64 {
        rss_kib(self.child.id(), "VmHWM:") / 1024
    }

    fn metrics(&self) -> String {
        Command::new("curl")
            .args([
                "-s",
                &format!("http://127.0.0.1:{}/metrics", self.metrics_port),
            ])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An OpenMetrics histogram's cumulative buckets: (upper bound, count).
fn histogram(metrics: &str, name: &str) -> Vec<(f64, f64)> {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}_bucket{{")))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let count: f64 = l.rsplit(' ').next()?.parse().ok()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, count))
        })
        .collect()
}

/// The buckets of `now` less those of an earlier scrape (`before`), bucket by bucket: the
/// observations made between the two.
fn since(now: &[(f64, f64)], before: &[(f64, f64)]) -> Vec<(f64, f64)> {
    now.iter()
        .map(|&(le, count)| {
            let earlier = before
                .iter()
                .find(|(l, _)| *l == le)
                .map_or(0.0, |(_, c)| *c);
            (le, count - earlier)
        })
        .collect()
}

/// The q-quantile of cumulative buckets (the upper bound of its bucket).
fn quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    buckets
        .iter()
        .find(|(_, count)| *count >= q * total)
        .map(|(le, _)| *le)
}

/// Healthy, and the status describes the Rollout's current spec.
fn settled(rollout: &Value) -> bool {
    rollout["status"]["phase"] == "Healthy"
        && rollout["status"]["observedGeneration"] == rollout["metadata"]["generation"]
}

fn in_shard(rollout: &Value, own: bool) -> bool {
    let shard = rollout["metadata"]["labels"][SHARD_LABEL].as_str();
    (shard.is_none() || shard == Some("0")) == own
}

/// Waits until `want` of the Rollouts (own or foreign) are settled; returns the time taken and
/// whether they all got there before the deadline.
fn wait_settled(server: &ApiServer, want: usize, own: bool) -> (Duration, bool) {
    let started = Instant::now();
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let done = server
            .list_json(ROLLOUTS, Some(NAMESPACE))
            .iter()
            .filter(|r| in_shard(r, own) && settled(r))
            .count();
        if done >= want {
            return (started.elapsed(), true);
        }
        if started.elapsed() > PHASE_DEADLINE {
            eprintln!("timed out: {done}/{want} settled");
            return (started.elapsed(), false);
        }
    }
}

/// Requests other than watches (which stay open and are counted once, when they start).
fn calls(counts: &RequestCounts) -> u64 {
    counts.count_where(|k| k.verb != "watch")
}

/// Waits until the controller sent no request but watches for [`QUIET`]; returns the time
/// until its last request.
fn wait_quiet(server: &ApiServer) -> Duration {
    let started = Instant::now();
    let (mut last, mut last_change) = (calls(&server.requests()), Instant::now());
    while last_change.elapsed() < QUIET && started.elapsed() < PHASE_DEADLINE {
        std::thread::sleep(Duration::from_millis(500));
        let now = calls(&server.requests());
        if now != last {
            (last, last_change) = (now, Instant::now());
        }
    }
    last_change - started
}

fn report_requests(phase: &str, counts: &RequestCounts, per: f64, unit: &str) {
    let total = counts.total() as f64;
    println!(
        "  {phase} requests: {} in all, {:.2} {unit} ({:.2} LIST, {:.2} 409 conflicts)",
        counts.total(),
        total / per,
        counts.verb("list") as f64 / per,
        counts.with_code(409) as f64 / per,
    );
    let mut rows: Vec<(String, u64)> = counts.by_verb_and_resource().into_iter().collect();
    rows.sort_by_key(|row| std::cmp::Reverse(row.1));
    let conflicts: BTreeMap<String, u64> =
        counts
            .iter()
            .filter(|(k, _)| k.code == 409)
            .fold(BTreeMap::new(), |mut m, (k, n)| {
                *m.entry(k.verb_and_resource()).or_insert(0) += n;
                m
            });
    for (what, n) in rows {
        let conflict = conflicts
            .get(&what)
            .map_or(String::new(), |c| format!(" (409: {:.2})", *c as f64 / per));
        println!("    {what:<40} {n:>9} {:>10.3}{conflict}", n as f64 / per);
    }
}

/// Reconcile latency over one phase: the controller's histograms now, less `before` (the
/// metrics scraped when the phase began; empty for a controller that just started).
fn report_latency(phase: &str, now: &str, before: &str) {
    let dropped = |metrics: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("vigil_events_dropped_total "))
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    if let Some(now_dropped) = dropped(now) {
        let dropped = now_dropped - dropped(before).unwrap_or(0.0);
        println!("  {phase}: events dropped (their queue full): {dropped}");
    }
    for (what, name) in [
        ("Rollout", "vigil_reconcile_duration_seconds"),
        ("AnalysisRun", "vigil_analysis_reconcile_duration_seconds"),
    ] {
        let buckets = since(&histogram(now, name), &histogram(before, name));
        let count = buckets.last().map_or(0.0, |(_, c)| *c);
        let fmt = |q| quantile(&buckets, q).map_or("?".into(), |v| format!("{}", v * 1000.0));
        println!(
            "  {phase}: {what} reconcile latency ({count} reconciles; bucket upper bounds): p50 <= {} ms, p90 <= {} ms, p99 <= {} ms",
            fmt(0.5),
            fmt(0.9),
            fmt(0.99)
        );
    }
}

/// Creates the Rollouts: own ones (shard 0 when sharded) and foreign ones across the other
/// shards, interleaved so every LIST and watch filters a mixed namespace.
fn seed(server: &ApiServer, settings: &Settings) {
    let total = settings.rollouts + settings.foreign;
    let every = total / settings.rollouts.max(1);
    let (mut own, mut foreign) = (0, 0);
    for i in 0..total {
        let own_turn =
            own < settings.rollouts && (i % every.max(1) == 0 || foreign >= settings.foreign);
        let shard = if !settings.sharded() {
            None
        } else if own_turn {
            Some(0)
        } else {
            Some(1 + foreign % FOREIGN_SHARDS)
        };
        if own_turn {
            own += 1;
        } else {
            foreign += 1;
        }
        server
            .put_json(ROLLOUTS, rollout(i, shard, settings))
            .expect("create a rollout");
    }
}

/// The other shards' controllers: carry the foreign Rollouts to Healthy, then stop.
fn settle_foreign(server: &ApiServer, kubeconfig: &Path, settings: &Settings) {
    let others = Controller::start(kubeconfig, Some(&format!("{SHARD_LABEL}!=0")));
    let (took, _) = wait_settled(server, settings.foreign, false);
    println!(
        "other shards: {} foreign Rollouts Healthy after {:.1} s (that controller: {} MiB)",
        settings.foreign,
        took.as_secs_f64(),
        others.rss_mib()
    );
    others.stop();
}

fn own_indices(server: &ApiServer) -> Vec<usize> {
    server
        .list_json(ROLLOUTS, Some(NAMESPACE))
        .iter()
        .filter(|r| in_shard(r, true))
        .filter_map(|r| {
            r["metadata"]["name"]
                .as_str()?
                .strip_prefix("app-")?
                .parse()
                .ok()
        })
        .collect()
}

/// What the cluster holds at one churn sample: the controller's caches mirror it, so memory
/// growth that follows these counts is the cluster's, not a leak.
struct ChurnSample {
    rss_mib: u64,
    settled: usize,
    replica_sets: usize,
    analysis_runs: usize,
}

impl ChurnSample {
    fn take(server: &ApiServer, controller: &Controller) -> Self {
        let settled_own = server
            .list_json(ROLLOUTS, Some(NAMESPACE))
            .iter()
            .filter(|r| in_shard(r, true) && settled(r))
            .count();
        Self {
            rss_mib: controller.rss_mib(),
            settled: settled_own,
            replica_sets: server.list_json(REPLICASETS, Some(NAMESPACE)).len(),
            analysis_runs: server.list_json(ANALYSIS_RUNS, Some(NAMESPACE)).len(),
        }
    }

    fn objects(&self) -> usize {
        self.replica_sets + self.analysis_runs
    }
}

fn churn(server: &ApiServer, controller: &Controller, own: &[usize], settings: &Settings) {
    let per_minute = ((own.len() as f64 * settings.churn_share).ceil() as usize).max(1);
    println!(
        "churn: {per_minute} Rollouts ({:.0}%) released every minute for {} minutes; history \
         limits (ReplicaSets, runs of each kind): {}",
        settings.churn_share * 100.0,
        settings.churn_minutes,
        settings
            .history
            .map_or("the defaults (10, 5)".to_owned(), |n| n.to_string())
    );
    server.take_requests();
    let before = controller.metrics();
    let mut samples = Vec::new();
    let mut next = 0;
    let started = Instant::now();
    for minute in 0..settings.churn_minutes {
        let image = format!("app:churn-{minute}");
        for _ in 0..per_minute {
            release(server, own[next % own.len()], &image);
            next += 1;
        }
        let end = started + Duration::from_secs(60 * (minute + 1));
        std::thread::sleep(end.saturating_duration_since(Instant::now()));
        let sample = ChurnSample::take(server, controller);
        println!(
            "  minute {:>3}: VmRSS {} MiB; settled {}/{}; cluster: {} ReplicaSets, {} AnalysisRuns; load {}",
            minute + 1,
            sample.rss_mib,
            sample.settled,
            own.len(),
            sample.replica_sets,
            sample.analysis_runs,
            load_average()
        );
        samples.push(sample);
    }
    let requests = server.take_requests();
    report_requests("churn", &requests, next as f64, "per released Rollout");
    report_latency("churn", &controller.metrics(), &before);
    report_churn_memory(&samples);
    report_churn_after_one_release_each(&samples, settings.churn_share);
}

/// Growth after warm-up (the first two minutes fill the caches after the restart), beside
/// the growth of what the caches mirror.
fn report_churn_memory(samples: &[ChurnSample]) {
    let (Some(base), Some(last)) = (samples.get(1), samples.last()) else {
        return;
    };
    report_growth(samples, 2, "after warm-up");
    let added = last.objects().saturating_sub(base.objects());
    if added > 0 {
        println!(
            "  cluster after warm-up: +{added} ReplicaSets and AnalysisRuns ({} -> {}); {:.1} KiB of VmRSS per object added",
            base.objects(),
            last.objects(),
            (last.rss_mib as f64 - base.rss_mib as f64) * 1024.0 / added as f64
        );
    }
}

/// Growth once the churn has released every Rollout at least once since the controller
/// started (`1 / share` minutes): what the controller keeps per Rollout after a release (its
/// last release for the DORA figures, say) is all there from then on, so growth after it is
/// not refilling.
fn report_churn_after_one_release_each(samples: &[ChurnSample], share: f64) {
    let minutes = ((1.0 / share.max(f64::EPSILON)).ceil() as usize).max(1);
    if samples.len() > minutes {
        report_growth(samples, minutes, "after every Rollout was released once");
    }
}

/// Memory growth from the sample of minute `from` (counted from 1) to the last one.
fn report_growth(samples: &[ChurnSample], from: usize, what: &str) {
    let (Some(base), Some(last)) = (samples.get(from.saturating_sub(1)), samples.last()) else {
        return;
    };
    let max = samples[from.saturating_sub(1)..]
        .iter()
        .map(|s| s.rss_mib)
        .max()
        .unwrap_or(base.rss_mib);
    let growth = |to: u64| (to as f64 / base.rss_mib.max(1) as f64 - 1.0) * 100.0;
    println!(
        "  memory {what}: {} MiB at minute {from}, max {max} MiB, last {} MiB (minute {}): growth {:+.1}% (max), {:+.1}% (last)",
        base.rss_mib,
        last.rss_mib,
        samples.len(),
        growth(max),
        growth(last.rss_mib)
    );
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let settings = Settings::from_env();
    let n = settings.rollouts;
    let server = ApiServer::start().with_replicaset_controller();
    let prometheus = settings.analysis.then(|| {
        prometheus::PrometheusServer::start_with_config("global:\n  scrape_interval: 1m\n")
    });
    if let Some(prometheus) = &prometheus {
        server
            .put_json(
                "vigil.dev/v1alpha1/analysistemplates",
                analysis_template(prometheus.url().as_str()),
            )
            .expect("create the analysis template");
    }
    seed(&server, &settings);
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    if settings.sharded() {
        settle_foreign(&server, &kubeconfig, &settings);
    }
    let selector = settings.sharded().then(|| format!("{SHARD_LABEL}=0"));
    println!(
        "controller_scale: {n} Rollouts{}{}",
        if settings.sharded() {
            format!(
                " of {} in the namespace (--selector {SHARD_LABEL}=0)",
                n + settings.foreign
            )
        } else {
            String::new()
        },
        if settings.analysis {
            ", setWeight + analysis step"
        } else {
            ", setWeight step"
        }
    );

    // 1. Initial convergence.
    server.take_requests();
    let controller = Controller::start(&kubeconfig, selector.as_deref());
    let (took, _) = wait_settled(&server, n, true);
    let initial = server.take_requests();
    println!(
        "  initial: all Healthy after {:.1} s (load {})",
        took.as_secs_f64(),
        load_average()
    );
    report_requests("initial", &initial, n as f64, "per Rollout");

    // 2. Steady state.
    std::thread::sleep(Duration::from_secs(5));
    server.take_requests();
    let steady_rss = controller.rss_mib();
    std::thread::sleep(settings.steady);
    let steady = server.take_requests();
    println!("  controller VmRSS steady {steady_rss} MiB");
    report_requests(
        "steady",
        &steady,
        settings.steady.as_secs_f64() / 60.0,
        "per minute",
    );

    // 3. A release of every Rollout.
    let own = own_indices(&server);
    let before_release = controller.metrics();
    let started = Instant::now();
    for &i in &own {
        release(&server, i, "app:2");
    }
    let changing = started.elapsed();
    wait_settled(&server, n, true);
    let released = server.take_requests();
    println!(
        "  release: all Healthy on the new revision {:.1} s after the first change ({:.1} s to change them all; load {})",
        started.elapsed().as_secs_f64(),
        changing.as_secs_f64(),
        load_average()
    );
    report_requests("release", &released, n as f64, "per Rollout");
    println!(
        "  controller VmRSS after the release {} MiB, peak {} MiB",
        controller.rss_mib(),
        controller.peak_rss_mib()
    );
    let after_release = controller.metrics();
    report_latency("initial and steady", &before_release, "");
    report_latency("release", &after_release, &before_release);

    // 4. Restart.
    controller.stop();
    server.take_requests();
    let controller = Controller::start(&kubeconfig, selector.as_deref());
    let took = wait_quiet(&server);
    let restart = server.take_requests();
    println!(
        "  restart: quiet (no request but watches for {} s) {:.1} s after start; VmRSS {} MiB (load {})",
        QUIET.as_secs(),
        took.as_secs_f64(),
        controller.rss_mib(),
        load_average()
    );
    report_requests("restart", &restart, n as f64, "per Rollout");

    // 5. Churn.
    if settings.churn_minutes > 0 {
        churn(&server, &controller, &own, &settings);
    }
    controller.stop();
}

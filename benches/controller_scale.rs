//! Scale: N Rollouts (default 10,000; `VIGIL_BENCH_ROLLOUTS`) fed through the in-process
//! Kubernetes API test server to the real `vigil controller` binary. Reports the time until
//! every Rollout is Healthy, the controller's resident memory (VmRSS from /proc), and reconcile
//! latency p50/p99 from the controller's own `vigil_reconcile_duration_seconds` histogram.
//!
//! `cargo bench --bench controller_scale` (builds the release binary first).

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use vigil::testing::apiserver::ApiServer;

fn rollout(i: usize) -> serde_json::Value {
    let name = format!("app-{i}");
    json!({
        "apiVersion": "vigil.dev/v1alpha1", "kind": "Rollout",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                         "spec": {"containers": [{"name": "app", "image": "app:1"}]}},
            "strategy": {"canary": {"steps": [{"setWeight": 50}]}}
        }
    })
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// The q-quantile of an OpenMetrics histogram's cumulative buckets (upper bound of the bucket).
fn quantile(metrics: &str, name: &str, q: f64) -> Option<f64> {
    let buckets: Vec<(f64, f64)> = metrics
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
        .collect();
    let total = buckets.last()?.1;
    buckets
        .iter()
        .find(|(_, count)| *count >= q * total)
        .map(|(le, _)| *le)
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let n: usize = std::env::var("VIGIL_BENCH_ROLLOUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let server = ApiServer::start().with_replicaset_controller();
    for i in 0..n {
        server
            .put_json("vigil.dev/v1alpha1/rollouts", rollout(i))
            .expect("create rollout");
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port");
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args([
            "controller",
            "--no-leader-election",
            "--concurrency",
            "16",
            "--metrics-addr",
        ])
        .arg(format!("127.0.0.1:{port}"))
        .env("KUBECONFIG", &kubeconfig)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .spawn()
        .expect("start controller");
    let deadline = started + Duration::from_secs(1800);
    let mut peak_rss = 0;
    loop {
        std::thread::sleep(Duration::from_secs(1));
        peak_rss = peak_rss.max(rss_kib(child.id()).unwrap_or(0));
        let healthy = server
            .list_json("vigil.dev/v1alpha1/rollouts", Some("default"))
            .iter()
            .filter(|r| r["status"]["phase"] == "Healthy")
            .count();
        if healthy == n {
            break;
        }
        if Instant::now() > deadline {
            eprintln!("timed out: {healthy}/{n} Healthy");
            break;
        }
    }
    let converged = started.elapsed();
    // Let it settle, then measure the steady state too.
    std::thread::sleep(Duration::from_secs(5));
    let steady_rss = rss_kib(child.id()).unwrap_or(0);
    let metrics = Command::new("curl")
        .args(["-s", &format!("http://127.0.0.1:{port}/metrics")])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    let p50 = quantile(&metrics, "vigil_reconcile_duration_seconds", 0.5);
    let p99 = quantile(&metrics, "vigil_reconcile_duration_seconds", 0.99);
    let reconciles = metrics
        .lines()
        .find_map(|l| l.strip_prefix("vigil_reconciles_total "))
        .unwrap_or("?");
    println!(
        "controller_scale: {n} rollouts Healthy after {:.1} s",
        converged.as_secs_f64()
    );
    println!("  reconciles: {reconciles}");
    println!(
        "  controller VmRSS: peak {} MiB, steady {} MiB",
        peak_rss / 1024,
        steady_rss / 1024
    );
    println!(
        "  reconcile latency (histogram bucket upper bounds): p50 <= {} s, p99 <= {} s",
        p50.map_or("?".into(), |v| format!("{v:.3}")),
        p99.map_or("?".into(), |v| format!("{v:.3}"))
    );
}

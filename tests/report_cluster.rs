//! `vigil report` and `vigil get rollout --watch` on a cluster: the real binary reads a Rollout
//! and its AnalysisRuns from the in-process Kubernetes API test server.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use vigil::api::{AnalysisRun, Rollout};
use vigil::testing::apiserver::ApiServer;

const NS: &str = "shop";
const VIGIL: &str = env!("CARGO_BIN_EXE_vigil");

fn measurement(phase: &str, second: u32, value: Option<&str>, reason: &str) -> serde_json::Value {
    json!({"phase": phase, "startedAt": format!("2026-03-01T10:00:{second:02}.000000Z"),
           "value": value, "reason": reason})
}

async fn create(client: &kube::Client) {
    let rollout: Rollout = serde_json::from_value(json!({
        "apiVersion": "vigil.dev/v1alpha1", "kind": "Rollout",
        "metadata": {"name": "web", "namespace": NS},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                         "spec": {"containers": [{"name": "web", "image": "web:2"}]}},
            "strategy": {"canary": {"steps": [
                {"setWeight": 20}, {"analysis": {"templates": [{"templateName": "errors"}]}}
            ]}}
        }
    }))
    .expect("rollout");
    let rollouts = Api::<Rollout>::namespaced(client.clone(), NS);
    rollouts
        .create(&PostParams::default(), &rollout)
        .await
        .expect("create rollout");
    let status = json!({"status": {
        "phase": "Progressing", "step": "2/2", "currentStepIndex": 1, "canaryWeight": 20,
        "stableRevision": "aaa", "canaryRevision": "bbb", "canaryAttempt": 1
    }});
    rollouts
        .patch_status("web", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("rollout status");
    let run: AnalysisRun = serde_json::from_value(json!({
        "apiVersion": "vigil.dev/v1alpha1", "kind": "AnalysisRun",
        "metadata": {"name": "web-bbb-1-step1", "namespace": NS,
                     "labels": {"vigil.dev/rollout": "web"}},
        "spec": {"metrics": [{"name": "error-rate", "successCondition": "result < 0.05",
                              "provider": {"prometheus": {"query": "q"}}}]}
    }))
    .expect("run");
    let runs = Api::<AnalysisRun>::namespaced(client.clone(), NS);
    runs.create(&PostParams::default(), &run)
        .await
        .expect("create run");
    set_measurements(
        client,
        vec![measurement("Successful", 10, Some("0.01"), "ok")],
    )
    .await;
}

async fn set_measurements(client: &kube::Client, measurements: Vec<serde_json::Value>) {
    let status = json!({"status": {
        "phase": "Running", "startedAt": "2026-03-01T10:00:05.000000Z",
        "metricResults": [{"name": "error-rate", "phase": "Running",
                           "count": measurements.len(), "measurements": measurements}]
    }});
    Api::<AnalysisRun>::namespaced(client.clone(), NS)
        .patch_status(
            "web-bbb-1-step1",
            &PatchParams::default(),
            &Patch::Merge(&status),
        )
        .await
        .expect("run status");
}

fn wait_for_text(path: &Path, what: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(what) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "no {what:?} in the watch output:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_and_watch_read_the_cluster() {
    support::install_crypto_provider();
    let server = ApiServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    let client = server.client();
    create(&client).await;

    let out = dir.path().join("web.html");
    let report = Command::new(VIGIL)
        .args(["report", "web", "-n", NS, "--state-dir"])
        .arg(dir.path().join("no-state"))
        .arg("-o")
        .arg(&out)
        .env("KUBECONFIG", &kubeconfig)
        .env("RUST_LOG", "error")
        .output()
        .expect("vigil report");
    assert!(
        report.status.success(),
        "{}",
        String::from_utf8_lossy(&report.stderr)
    );
    let html = std::fs::read_to_string(&out).expect("the report");
    assert!(html.contains("Release report: Rollout shop/web"), "{html}");
    assert!(html.contains("In progress (Progressing)"), "{html}");
    assert!(html.contains("AnalysisRun web-bbb-1-step1"), "{html}");
    assert!(html.contains("<svg"), "{html}");

    // The live view into a file: plain lines; a measurement error shows as it is recorded.
    let watched = dir.path().join("watch.txt");
    let watch = Killed(
        Command::new(VIGIL)
            .args(["get", "rollout", "web", "-n", NS, "--watch"])
            .env("KUBECONFIG", &kubeconfig)
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&watched).expect("watch output"))
            .stderr(Stdio::null())
            .spawn()
            .expect("vigil get rollout --watch"),
    );
    let first = wait_for_text(&watched, "weight 20% Progressing");
    set_measurements(
        &client,
        vec![
            measurement("Successful", 10, Some("0.01"), "ok"),
            measurement(
                "Error",
                20,
                None,
                "failed to query http://prometheus:9090: timed out",
            ),
        ],
    )
    .await;
    let text = wait_for_text(&watched, "measurement error in error-rate");
    drop(watch);
    assert!(first.starts_with(|c: char| c.is_ascii_digit()), "{first}");
    assert!(
        text.contains("failed to query http://prometheus:9090: timed out"),
        "{text}"
    );
    for line in text.lines() {
        assert!(line.chars().count() <= 120, "{line}");
        assert!(!line.contains('\x1b'), "{line}");
    }
}

/// An AnalysisRun of Rollout `rollout` for canary `revision`, ended in `phase` at `end`.
async fn finished_run(client: &kube::Client, name: &str, revision: &str, phase: &str, end: u32) {
    let run: AnalysisRun = serde_json::from_value(json!({
        "apiVersion": "vigil.dev/v1alpha1", "kind": "AnalysisRun",
        "metadata": {"name": name, "namespace": NS,
                     "labels": {"vigil.dev/rollout": "shop-web", "vigil.dev/revision": revision}},
        "spec": {"metrics": [{"name": "error-rate", "successCondition": "result < 0.05",
                              "provider": {"prometheus": {"query": "q"}}}]}
    }))
    .expect("run");
    let runs = Api::<AnalysisRun>::namespaced(client.clone(), NS);
    runs.create(&PostParams::default(), &run)
        .await
        .expect("create run");
    let status = json!({"status": {
        "phase": phase, "message": format!("run {name} {phase}"),
        "startedAt": format!("2026-03-01T10:{:02}:00.000000Z", end - 1),
        "completedAt": format!("2026-03-01T10:{end:02}:00Z"),
    }});
    runs.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("run status");
}

/// Issue 16: `vigil history NAME` read only a `vigil run` state directory. On a cluster it
/// reads the Rollout's status and AnalysisRuns, and prints what it prints locally.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_reads_the_rollouts_analysis_runs_on_a_cluster() {
    support::install_crypto_provider();
    let server = ApiServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    let client = server.client();
    let rollout: Rollout = serde_json::from_value(json!({
        "apiVersion": "vigil.dev/v1alpha1", "kind": "Rollout",
        "metadata": {"name": "shop-web", "namespace": NS},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                         "spec": {"containers": [{"name": "web", "image": "web:4"}]}},
            "strategy": {"canary": {"steps": [
                {"analysis": {"templates": [{"templateName": "errors"}]}}
            ]}}
        }
    }))
    .expect("rollout");
    let rollouts = Api::<Rollout>::namespaced(client.clone(), NS);
    rollouts
        .create(&PostParams::default(), &rollout)
        .await
        .expect("create rollout");
    rollouts
        .patch_status(
            "shop-web",
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": {
                "phase": "Progressing", "stableRevision": "bbb", "canaryRevision": "ddd",
                "canaryAttempt": 3
            }})),
        )
        .await
        .expect("rollout status");
    finished_run(&client, "shop-web-bbb-1-step0", "bbb", "Successful", 2).await;
    finished_run(&client, "shop-web-ccc-2-step0", "ccc", "Failed", 5).await;
    finished_run(&client, "shop-web-ddd-3-step0", "ddd", "Running", 9).await;

    let output = Command::new(VIGIL)
        .args(["history", "shop-web", "-n", NS, "--state-dir"])
        .arg(dir.path().join("no-state"))
        .env("KUBECONFIG", &kubeconfig)
        .env("RUST_LOG", "error")
        .output()
        .expect("vigil history");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("STARTED"), "{text}");
    assert!(
        lines[1].starts_with("2026-03-01 10:01:00")
            && lines[1].contains("bbb")
            && lines[1].contains("promoted")
            && lines[1].contains("60.0s"),
        "{text}"
    );
    assert!(
        lines[2].contains("ccc")
            && lines[2].contains("rolled back")
            && lines[2].contains("run shop-web-ccc-2-step0 Failed"),
        "{text}"
    );
    assert!(
        lines[3].contains("ddd") && lines[3].contains("in progress"),
        "{text}"
    );
    assert!(
        text.contains("3 releases: 1 promoted, 1 rolled back; change failure rate 50%"),
        "{text}"
    );

    // No such Rollout: said, exit 1.
    let output = Command::new(VIGIL)
        .args(["history", "nope", "-n", NS, "--state-dir"])
        .arg(dir.path().join("no-state"))
        .env("KUBECONFIG", &kubeconfig)
        .output()
        .expect("vigil history");
    assert_eq!(output.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains("no Rollout named \"nope\" in namespace shop"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A child process this test started, killed when it goes out of scope (a failing assertion
/// included).
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

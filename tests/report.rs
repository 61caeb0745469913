//! `vigil report`, `vigil history` and `vigil local list` on a state directory as `vigil run`
//! leaves it, run as the real binary; the report opened in a real headless Chromium (rendered
//! DOM, console, screenshot). The release itself is made by `tests/local_e2e.rs`, which also
//! checks the report `vigil run` writes per release; here the state is written as files so
//! that every judge's measurements are present.

mod support;

use std::path::Path;
use std::process::Command;

use serde_json::json;

const VIGIL: &str = env!("CARGO_BIN_EXE_vigil");

fn t(seconds: u32) -> String {
    format!("2026-03-01T10:{:02}:{:02}Z", seconds / 60, seconds % 60)
}

fn measurement(phase: &str, at: u32, value: &str, reason: &str) -> serde_json::Value {
    json!({"phase": phase, "startedAt": format!("2026-03-01T10:{:02}:{:02}.000000Z", at / 60, at % 60), "value": value, "reason": reason})
}

fn write_json(dir: &Path, name: &str, value: &serde_json::Value) {
    std::fs::write(
        dir.join(name),
        serde_json::to_vec_pretty(value).expect("json"),
    )
    .expect("write state file");
}

/// A release of `web` rolled back at its analysis: a threshold metric, a Mann–Whitney metric
/// and a sequential error-count metric, as `vigil run` stores them.
fn rolled_back_state(dir: &Path) {
    write_json(
        dir,
        "web.rollout.json",
        &json!({
            "spec": {
                "selector": {"matchLabels": {"app": "web"}},
                "strategy": {"canary": {"steps": [
                    {"setWeight": 20},
                    {"analysis": {"templates": [{"templateName": "checks"}]}},
                    {"setWeight": 50}
                ]}}
            },
            "generation": 2,
            "revisions": {}
        }),
    );
    write_json(
        dir,
        "web.status.json",
        &json!({
            "phase": "Degraded",
            "message": "error-rate failed: result < 0.05 is false <script>alert(1)</script>",
            "currentStepIndex": 1,
            "step": "2/3",
            "stableRevision": "aaa111",
            "canaryRevision": "bbb222",
            "canaryWeight": 0,
            "abort": true,
            "abortedAt": t(41),
            "canaryAttempt": 1
        }),
    );
    write_json(
        dir,
        "web.events.json",
        &json!([
            {"time": t(0), "type": "Normal", "reason": "RolloutStarted", "message": "canary bbb222 started"},
            {"time": t(5), "type": "Normal", "reason": "StepCompleted", "message": "step 1/3 setWeight 20 completed"},
            {"time": t(41), "type": "Warning", "reason": "AnalysisFailed", "message": "error-rate failed; all traffic back on aaa111"}
        ]),
    );
    let threshold = [
        measurement(
            "Successful",
            10,
            "0.01",
            "result < 0.05 is true (value 0.01)",
        ),
        measurement(
            "Successful",
            20,
            "0.02",
            "result < 0.05 is true (value 0.02)",
        ),
        measurement("Failed", 30, "0.21", "result < 0.05 is false (value 0.21)"),
        measurement("Failed", 40, "0.3", "result < 0.05 is false (value 0.3)"),
    ];
    let counts = [
        measurement(
            "Running",
            10,
            "canary 2/100 baseline 1/400",
            "error-rate ratio canary/baseline 8 (99% CS [0.2, +Inf]) undecided; errors canary 2/100 baseline 1/400",
        ),
        measurement(
            "Running",
            20,
            "canary 9/200 baseline 3/800",
            "error-rate ratio canary/baseline 12 (99% CS [1.05, 90]) undecided; errors canary 9/200 baseline 3/800",
        ),
        measurement(
            "Failed",
            30,
            "canary 60/300 baseline 5/1200",
            "error-rate ratio canary/baseline 48 (99% CS [9.5, 210]) above 1 + fail margin 0.2; errors canary 60/300 baseline 5/1200",
        ),
    ];
    let shift = [measurement(
        "Successful",
        30,
        "shift 0.004 [-0.01, 0.02]",
        "Pass: no significant difference; canary median 0.21, baseline median 0.2",
    )];
    write_json(
        dir,
        "web-bbb222-1-step1.run.json",
        &json!({
            "rollout": "web",
            "spec": {"metrics": [
                {"name": "error-rate", "successCondition": "result < 0.05",
                 "provider": {"prometheus": {"query": "sum(rate(errors[1m]))"}}},
                {"name": "errors", "sequential": {"test": "errorCounts", "failMargin": 0.2},
                 "provider": {"prometheus": {"canaryQuery": "a", "baselineQuery": "b",
                   "canaryRequestsQuery": "c", "baselineRequestsQuery": "d"}}},
                {"name": "latency", "mannWhitney": {},
                 "provider": {"prometheus": {"canaryQuery": "a", "baselineQuery": "b"}}}
            ]},
            "status": {
                "phase": "Failed",
                "message": "error-rate: result < 0.05 is false (value 0.21)",
                "startedAt": "2026-03-01T10:00:05.000000Z",
                "metricResults": [
                    {"name": "error-rate", "phase": "Failed", "count": 4, "successful": 2, "failed": 2, "measurements": threshold},
                    {"name": "errors", "phase": "Failed", "count": 3, "failed": 1, "measurements": counts},
                    {"name": "latency", "phase": "Successful", "count": 1, "successful": 1, "measurements": shift}
                ]
            }
        }),
    );
    write_json(
        dir,
        "web.history.json",
        &json!({"releases": [
            {"revision": "aaa111", "attempt": 1, "startedAt": "2026-02-28T09:00:00Z",
             "endedAt": "2026-02-28T09:03:00Z", "outcome": "Promoted"},
            {"revision": "bbb222", "attempt": 1, "startedAt": t(0), "endedAt": t(41),
             "outcome": "RolledBack", "reason": "error-rate failed", "timeToRestoreSeconds": 0.8}
        ]}),
    );
}

fn vigil(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(VIGIL).args(args).output().expect("vigil runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn the_console_check_sees_an_error_on_a_page() {
    // The check below must be able to fail: a page that logs an error is seen.
    let work = tempfile::tempdir().expect("temp dir");
    let page = work.path().join("probe.html");
    std::fs::write(
        &page,
        "<html><body><p>probe</p><script>console.error('probe-error')</script></body></html>",
    )
    .expect("write page");
    let rendered = support::chromium::render(&page, work.path());
    assert!(
        rendered.console.iter().any(|l| l.contains("probe-error")),
        "console: {:?}",
        rendered.console
    );
    assert!(rendered.dom.contains("<p>probe</p>"), "{}", rendered.dom);
}

#[test]
fn a_release_report_renders_in_chromium_with_its_summary_plots_and_timeline() {
    let work = tempfile::tempdir().expect("temp dir");
    let state = work.path().join("state");
    std::fs::create_dir(&state).expect("state dir");
    rolled_back_state(&state);
    let out = work.path().join("web.html");
    let (ok, stdout, stderr) = vigil(&[
        "report",
        "web",
        "--state-dir",
        state.to_str().expect("utf-8 path"),
        "-o",
        out.to_str().expect("utf-8 path"),
    ]);
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("report written to"), "{stdout}");
    let html = std::fs::read_to_string(&out).expect("the report");
    assert!(!html.contains("<script"), "no script, nor an injected one");
    assert!(
        !html.contains(" src=") && !html.contains(" href="),
        "self-contained: nothing loaded from elsewhere"
    );

    let rendered = support::chromium::render(&out, work.path());
    assert!(
        rendered.console.is_empty(),
        "console: {:?}",
        rendered.console
    );
    for expected in [
        "Release report: Rollout web",
        "Rolled back: all traffic on the stable version (Degraded)",
        // The hostile text in the message is shown as text, not run.
        "&lt;script&gt;alert(1)&lt;/script&gt;",
        "Requests the canary served: 300 (60 failed)",
        "First failing verdict: error-rate at 2026-03-01 10:00:30 UTC",
        "Time to rollback (failing verdict to all traffic on stable): 11.0 s",
        "setWeight 20%",
        "analysis checks",
        "web-bbb222-1-step1: Failed",
        "AnalysisFailed",
        "Metric error-rate",
        "Metric errors",
        "Metric latency",
        "it narrows as evidence",
        "result &lt; 0.05",
    ] {
        assert!(
            rendered.dom.contains(expected),
            "missing {expected:?} in {}",
            rendered.dom
        );
    }
    // The sequential judge's fail line sits at its default margin (the template sets none).
    let fail_line = format!(
        "fail above {}",
        1.0 + vigil::api::SequentialJudge::DEFAULT_FAIL_MARGIN
    );
    assert!(rendered.dom.contains(&fail_line), "missing {fail_line:?}");
    // Values of error-rate; canary and baseline of errors; canary and baseline medians of
    // latency (issue 16: the stable/baseline arm beside the canary); two estimate charts.
    let charts = rendered.dom.matches("<svg").count();
    assert_eq!(charts, 5, "{}", rendered.dom);
    assert!(
        rendered.dom.contains("median of the window"),
        "the Mann–Whitney metric's arms are drawn"
    );
    // To look at them: VIGIL_TEST_ARTIFACTS=/some/dir cargo test --test report
    if let Some(keep) = std::env::var_os("VIGIL_TEST_ARTIFACTS") {
        let keep = Path::new(&keep);
        std::fs::copy(&out, keep.join("report.html")).expect("keep the report");
        std::fs::copy(&rendered.screenshot, keep.join("report.png")).expect("keep the screenshot");
    }
    let png = std::fs::read(&rendered.screenshot).expect("the screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    assert!(
        png.len() > 20_000,
        "a page with plots, not a blank one: {} bytes",
        png.len()
    );
}

#[test]
fn an_analysis_run_report_and_unknown_names() {
    let work = tempfile::tempdir().expect("temp dir");
    let state = work.path().join("state");
    std::fs::create_dir(&state).expect("state dir");
    rolled_back_state(&state);
    let out = work.path().join("run.html");
    let state_arg = state.to_str().expect("utf-8 path");
    let (ok, stdout, stderr) = vigil(&[
        "report",
        "web-bbb222-1-step1",
        "--state-dir",
        state_arg,
        "-o",
        out.to_str().expect("utf-8 path"),
    ]);
    assert!(ok, "{stdout}{stderr}");
    let html = std::fs::read_to_string(&out).expect("the report");
    assert!(
        html.contains("Analysis report: AnalysisRun web-bbb222-1-step1"),
        "{html}"
    );
    assert!(html.contains("Analysis Failed"), "{html}");
    let (ok, _, stderr) = vigil(&["history", "nope", "--state-dir", state_arg]);
    assert!(!ok);
    assert!(
        stderr.contains("no Rollout or AnalysisRun named \"nope\""),
        "{stderr}"
    );
    let (ok, _, stderr) = vigil(&["history", "web", "--state-dir", "/nonexistent/vigil"]);
    assert!(!ok);
    assert!(
        stderr.contains("no state directory at /nonexistent/vigil"),
        "{stderr}"
    );
}

#[test]
fn history_and_list_read_the_state_directory() {
    let work = tempfile::tempdir().expect("temp dir");
    rolled_back_state(work.path());
    let dir = work.path().to_str().expect("utf-8 path");
    let (ok, stdout, stderr) = vigil(&["history", "web", "--state-dir", dir]);
    assert!(ok, "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[1].contains("aaa111") && lines[1].contains("promoted") && lines[1].contains("3.0m"),
        "{stdout}"
    );
    assert!(
        lines[2].contains("bbb222")
            && lines[2].contains("rolled back")
            && lines[2].contains("0.8s"),
        "{stdout}"
    );
    assert!(
        stdout.contains("2 releases: 1 promoted, 1 rolled back; change failure rate 50%"),
        "{stdout}"
    );
    let (ok, stdout, stderr) = vigil(&["local", "list", "--state-dir", dir]);
    assert!(ok, "{stderr}");
    assert!(
        stdout
            .lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("web") && l.contains("Degraded") && l.contains("2/3")),
        "{stdout}"
    );
}

/// Metric base names from `# TYPE` lines of an OpenMetrics text.
fn typed_names(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// Every string in the dashboard where Grafana sends PromQL: panel targets and variables.
fn queries(dashboard: &serde_json::Value) -> Vec<String> {
    let mut found = Vec::new();
    let panels = dashboard["panels"].as_array().expect("panels");
    for panel in panels {
        if panel["type"] == "row" {
            continue;
        }
        let targets = panel["targets"]
            .as_array()
            .expect("every panel has targets");
        assert!(!targets.is_empty(), "panel {} has no query", panel["title"]);
        for target in targets {
            let expr = target["expr"].as_str().expect("a PromQL expr");
            assert!(
                !expr.trim().is_empty(),
                "panel {} has an empty query",
                panel["title"]
            );
            found.push(expr.to_owned());
        }
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .expect("variables")
    {
        if variable["type"] == "query" {
            found.push(variable["query"].as_str().expect("a query").to_owned());
        }
    }
    found
}

/// The metric names a query reads: identifiers starting `vigil_` or `http_`.
fn metric_names(query: &str) -> Vec<String> {
    query
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|word| word.starts_with("vigil_") || word.starts_with("http_"))
        .map(str::to_owned)
        .collect()
}

/// Gives every family of the controller's metrics that the dashboard reads a series.
fn exercise(metrics: &vigil::metrics::Metrics) {
    use vigil::api::{RolloutPhase, RolloutStatus};
    metrics.verdict("Failed");
    metrics.rollout_phase("shop/web", Some("Degraded"));
    metrics.measurement_duration.observe(0.1);
    let now = jiff::Timestamp::now();
    let idle = RolloutStatus::default();
    let started = RolloutStatus {
        phase: Some(RolloutPhase::Progressing),
        stable_revision: Some("a".into()),
        canary_revision: Some("b".into()),
        canary_attempt: 1,
        ..RolloutStatus::default()
    };
    let promoted = RolloutStatus {
        phase: Some(RolloutPhase::Healthy),
        stable_revision: Some("b".into()),
        ..started.clone()
    };
    metrics.dora.record("shop", "web", &idle, &started, now);
    metrics.dora.record("shop", "web", &started, &promoted, now);
    let failed = RolloutStatus {
        phase: Some(RolloutPhase::Degraded),
        abort: true,
        aborted_at: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now)),
        ..started.clone()
    };
    metrics.dora.record("shop", "api", &idle, &started, now);
    metrics.dora.record("shop", "api", &started, &failed, now);
}

#[tokio::test]
async fn the_grafana_dashboard_parses_and_reads_only_metrics_vigil_exports() {
    support::install_crypto_provider();
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/grafana/vigil-dashboard.json"
    );
    let text = std::fs::read_to_string(path).expect("the dashboard");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    assert!(dashboard["title"].is_string() && dashboard["uid"].is_string());
    // What vigil exports: the controller's /metrics and the local proxy's (the request series
    // a mesh exports under the same names).
    // Families show in the text once they have a series: give each one.
    let metrics = vigil::metrics::Metrics::default();
    exercise(&metrics);
    let mut exported = typed_names(&metrics.encode());
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().expect("address");
    let proxy = vigil::platform::local::proxy::WeightedProxy::bind(any, any, "web".into())
        .await
        .expect("bind the proxy");
    let app =
        support::fake_http::FakeServer::start(|_| support::fake_http::Reply::new(200, "ok")).await;
    let app_addr = format!(
        "{}:{}",
        app.url.host_str().expect("host"),
        app.url.port().expect("port")
    );
    proxy
        .set_backends(
            vigil::platform::local::proxy::Backend {
                revision: "v1".into(),
                addrs: vec![app_addr.parse().expect("address")],
            },
            None,
            0,
        )
        .expect("backends");
    let served = reqwest::get(format!("http://{}/", proxy.local_addr()))
        .await
        .expect("a request through the proxy");
    assert_eq!(served.status(), 200);
    let proxy_metrics = reqwest::get(format!("http://{}/metrics", proxy.metrics_addr()))
        .await
        .expect("scrape the proxy")
        .text()
        .await
        .expect("the proxy's metrics");
    exported.extend(typed_names(&proxy_metrics));
    assert!(
        exported.iter().any(|n| n == "vigil_releases_started"),
        "{exported:?}"
    );
    let suffixes = ["", "_total", "_bucket", "_sum", "_count"];
    let mut referenced = 0;
    for query in queries(&dashboard) {
        for name in metric_names(&query) {
            referenced += 1;
            assert!(
                exported
                    .iter()
                    .any(|base| suffixes.iter().any(|s| format!("{base}{s}") == name)),
                "{name} (in {query}) is not a metric vigil exports: {exported:?}"
            );
        }
    }
    for dora in [
        "vigil_releases_promoted_total",
        "vigil_releases_rolled_back_total",
        "vigil_time_to_restore_seconds_bucket",
        "vigil_release_duration_seconds_bucket",
    ] {
        assert!(text.contains(dora), "the dashboard shows {dora}");
    }
    assert!(referenced >= 15, "{referenced} metric references found");
}

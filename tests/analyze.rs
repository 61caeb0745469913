//! `vigil analyze --start/--end` replays a template over fixture data served by a real
//! Prometheus (built with promtool from OpenMetrics with fixed timestamps).

mod support;

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;
use support::prometheus::{Fixture, PrometheusServer, T_END};

/// One Prometheus for the whole file: three rollouts with different canary behaviour.
fn prometheus() -> &'static PrometheusServer {
    static SERVER: OnceLock<PrometheusServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        // Each series carries its revision, as vigil's proxy exports them: `R-canary` and
        // `R-stable` for rollout `R` (see `revisions`).
        let labels = |rollout: &'static str, role: &'static str, code: &'static str| {
            let revision: &'static str = format!("{rollout}-{role}").leak();
            [
                ("rollout", rollout),
                ("revision", revision),
                ("role", role),
                ("code", code),
            ]
        };
        with_a_previous_canary(Fixture::default())
            // healthy: 0.5% errors on the canary.
            .counter("http_requests", &labels("healthy", "stable", "200"), 19.9)
            .counter("http_requests", &labels("healthy", "stable", "500"), 0.1)
            .counter("http_requests", &labels("healthy", "canary", "200"), 9.95)
            .counter("http_requests", &labels("healthy", "canary", "500"), 0.05)
            // erroring: 10% errors on the canary.
            .counter("http_requests", &labels("erroring", "stable", "200"), 19.9)
            .counter("http_requests", &labels("erroring", "stable", "500"), 0.1)
            .counter("http_requests", &labels("erroring", "canary", "200"), 9.0)
            .counter("http_requests", &labels("erroring", "canary", "500"), 1.0)
            // idle: the canary exists but serves nothing.
            .counter("http_requests", &labels("idle", "stable", "200"), 20.0)
            .counter("http_requests", &labels("idle", "canary", "200"), 0.0)
            // Latency: a fast canary and a slow one (10 requests/s each).
            .histogram(
                "http_request_duration_seconds",
                &[
                    ("rollout", "healthy"),
                    ("revision", "healthy-canary"),
                    ("role", "canary"),
                ],
                &[
                    (0.1, 9.0),
                    (0.25, 9.8),
                    (0.5, 9.95),
                    (1.0, 10.0),
                    (2.5, 10.0),
                ],
                10.0,
                0.6,
            )
            .histogram(
                "http_request_duration_seconds",
                &[
                    ("rollout", "healthy"),
                    ("revision", "healthy-stable"),
                    ("role", "stable"),
                ],
                &[
                    (0.1, 18.0),
                    (0.25, 19.6),
                    (0.5, 19.9),
                    (1.0, 20.0),
                    (2.5, 20.0),
                ],
                20.0,
                1.2,
            )
            .histogram(
                "http_request_duration_seconds",
                &[
                    ("rollout", "erroring"),
                    ("revision", "erroring-stable"),
                    ("role", "stable"),
                ],
                &[
                    (0.1, 18.0),
                    (0.25, 19.6),
                    (0.5, 19.9),
                    (1.0, 20.0),
                    (2.5, 20.0),
                ],
                20.0,
                1.2,
            )
            .histogram(
                "http_request_duration_seconds",
                &[
                    ("rollout", "erroring"),
                    ("revision", "erroring-canary"),
                    ("role", "canary"),
                ],
                &[(0.1, 1.0), (0.25, 3.0), (0.5, 5.0), (1.0, 7.0), (2.5, 9.5)],
                10.0,
                9.0,
            )
            // The same traffic as Istio and the NGINX ingress controller report it.
            .counter(
                "istio_requests",
                &[
                    ("reporter", "source"),
                    ("destination_service_namespace", "shop"),
                    ("destination_service_name", "checkout-canary"),
                    ("response_code", "200"),
                ],
                9.0,
            )
            .counter(
                "istio_requests",
                &[
                    ("reporter", "source"),
                    ("destination_service_namespace", "shop"),
                    ("destination_service_name", "checkout-canary"),
                    ("response_code", "503"),
                ],
                1.0,
            )
            .legacy_counter(
                "nginx_ingress_controller_requests",
                &[
                    ("ingress", "checkout"),
                    ("service", "checkout-canary"),
                    ("status", "200"),
                ],
                9.99,
            )
            // Istio's canary is slow (milliseconds: p95 1.75 s, p99 2.35 s); NGINX's is fast.
            .histogram(
                "istio_request_duration_milliseconds",
                &[
                    ("reporter", "source"),
                    ("destination_service_namespace", "shop"),
                    ("destination_service_name", "checkout-canary"),
                ],
                &[
                    (100.0, 2.0),
                    (250.0, 4.0),
                    (500.0, 6.0),
                    (1000.0, 9.0),
                    (2500.0, 10.0),
                ],
                10.0,
                7000.0,
            )
            .histogram(
                "nginx_ingress_controller_request_duration_seconds",
                &[("ingress", "checkout"), ("service", "checkout-canary")],
                &[
                    (0.1, 9.0),
                    (0.25, 9.8),
                    (0.5, 9.95),
                    (1.0, 10.0),
                    (2.5, 10.0),
                ],
                10.0,
                0.6,
            )
            .legacy_counter(
                "nginx_ingress_controller_requests",
                &[
                    ("ingress", "checkout"),
                    ("service", "checkout-canary"),
                    ("status", "500"),
                ],
                0.01,
            )
            .start()
    })
}

/// When rollout `recanary`'s current canary (revision `recanary-new`) started: the previous
/// canary (`recanary-old`, half its requests failing) was rolled back at that moment.
const RECANARY_START: i64 = T_END - 1800;

/// Rollout `recanary`: a stable revision throughout; a previous canary `recanary-old` serving
/// 10 requests/s, half of them 5xx, until [`RECANARY_START`]; from then on the current canary
/// `recanary-new` serving 10 requests/s without errors. Both canaries carry `role="canary"`, as
/// vigil's proxy labels whichever revision is the canary.
fn with_a_previous_canary(fixture: Fixture) -> Fixture {
    let from = |start: i64, end: i64, per_second: f64, times: &[i64]| -> Vec<(i64, f64)> {
        times
            .iter()
            .filter(|t| (start..=end).contains(*t))
            .map(|t| (*t, per_second * (t - start) as f64))
            .collect()
    };
    let times: Vec<i64> = fixture.times().collect();
    let (first, last) = (times[0], times[times.len() - 1]);
    let series = |revision: &'static str, role: &'static str, code: &'static str| {
        [
            ("rollout", "recanary"),
            ("revision", revision),
            ("role", role),
            ("code", code),
        ]
    };
    fixture
        .counter_samples(
            "http_requests",
            &series("recanary-stable", "stable", "200"),
            from(first, last, 20.0, &times),
        )
        .counter_samples(
            "http_requests",
            &series("recanary-old", "canary", "200"),
            from(first, RECANARY_START, 5.0, &times),
        )
        .counter_samples(
            "http_requests",
            &series("recanary-old", "canary", "500"),
            from(first, RECANARY_START, 5.0, &times),
        )
        .counter_samples(
            "http_requests",
            &series("recanary-new", "canary", "200"),
            from(RECANARY_START, last, 10.0, &times),
        )
}

/// The `--arg`s naming rollout `rollout`'s canary revision (and its stable one when `both`), as
/// vigil passes them to a run: the fixture's revisions are `ROLLOUT-canary`, `ROLLOUT-stable`.
fn revisions(rollout: &str, both: bool) -> Vec<String> {
    let mut args = vec![
        format!("rollout={rollout}"),
        format!("canary-revision={rollout}-canary"),
    ];
    if both {
        args.push(format!("stable-revision={rollout}-stable"));
    }
    args
}

fn fixture(name: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // Shipped templates are named by their path; test-only ones live in tests/fixtures.
    let path = if name.starts_with("analysis-templates/") {
        root.join(name)
    } else {
        root.join("tests/fixtures").join(name)
    };
    path.display().to_string()
}

/// A measurement's `startedAt` (stored to the microsecond) in Unix seconds; a fraction fails.
fn started_at(measurement: &serde_json::Value) -> i64 {
    let text = measurement["startedAt"].as_str().expect("startedAt");
    let at: jiff::Timestamp = text.parse().expect("RFC 3339");
    assert_eq!(at.subsec_nanosecond(), 0, "{text}");
    at.as_second()
}

fn rfc3339(unix: i64) -> String {
    jiff::Timestamp::from_second(unix)
        .expect("valid time")
        .to_string()
}

/// Runs `vigil analyze` over the last hour of fixture data; returns exit code and JSON.
fn analyze(template: &str, args: &[&str]) -> (i32, Value, String) {
    analyze_between(template, args, T_END - 3600, T_END - 60)
}

/// Runs `vigil analyze` replaying `[start, end]` (Unix seconds); returns exit code and JSON.
fn analyze_between(template: &str, args: &[&str], start: i64, end: i64) -> (i32, Value, String) {
    let server = prometheus();
    let mut command = Command::new(env!("CARGO_BIN_EXE_vigil"));
    command
        .args([
            "analyze",
            "-f",
            &fixture(template),
            "--prometheus",
            server.url().as_str(),
        ])
        .args(["--start", &rfc3339(start), "--end", &rfc3339(end)])
        .args(["--output", "json"]);
    for arg in args {
        command.args(["--arg", arg]);
    }
    let output = command.output().expect("run vigil");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let json = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (output.status.code().unwrap_or(-1), json, stderr)
}

/// `args` as the `&str`s [`analyze`] takes.
fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// Runs `template` with `args`, checks the exit code and the run's phase, returns the JSON.
fn analyze_expecting(template: &str, args: &[&str], code: i32, phase: &str) -> Value {
    let (got, json, stderr) = analyze(template, args);
    assert_eq!(
        (got, json["phase"].as_str()),
        (code, Some(phase)),
        "{json:#}\n{stderr}"
    );
    json
}

fn measurements(json: &Value) -> Vec<Value> {
    json["metricResults"][0]["measurements"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn healthy_canary_is_successful_with_every_measurement_in_the_window() {
    let (code, json, stderr) = analyze("error-rate.yaml", &["rollout=healthy"]);
    assert_eq!(code, 0, "{json:#}\n{stderr}");
    assert_eq!(json["phase"], "Successful");
    let taken = measurements(&json);
    assert_eq!(taken.len(), 5, "count: 5");
    // Measurements are taken at the replayed times, one interval apart.
    assert_eq!(started_at(&taken[0]), T_END - 3600);
    assert_eq!(started_at(&taken[1]), T_END - 3540);
    assert_eq!(taken[0]["value"], "0.005");
    assert_eq!(
        taken[0]["reason"],
        "result 0.005 meets successCondition `result < 0.01`"
    );
}

#[test]
fn erroring_canary_fails_at_the_first_measurement_with_the_reason() {
    let (code, json, stderr) = analyze("error-rate.yaml", &["rollout=erroring"]);
    assert_eq!(code, 1, "{json:#}\n{stderr}");
    assert_eq!(json["phase"], "Failed");
    assert_eq!(measurements(&json).len(), 1, "the run fails at once");
    let message = json["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("error-rate: 1 failed measurement(s), more than failureLimit 0"),
        "{message}"
    );
    assert!(
        message.contains("result 0.1 meets failureCondition `result >= 0.05`"),
        "{message}"
    );
}

#[test]
fn canary_without_traffic_is_inconclusive_and_says_so() {
    let (code, json, stderr) = analyze("error-rate.yaml", &["rollout=idle"]);
    assert_eq!(code, 2, "{json:#}\n{stderr}");
    assert_eq!(json["phase"], "Inconclusive");
    let reason = measurements(&json)[0]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        reason.starts_with("result NaN (often 0/0: no traffic)"),
        "{reason}"
    );
}

#[test]
fn a_rollout_that_does_not_exist_has_no_data_and_is_inconclusive() {
    let (code, json, stderr) = analyze("error-rate.yaml", &["rollout=missing"]);
    assert_eq!(code, 2, "{json:#}\n{stderr}");
    let reason = measurements(&json)[0]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(
        reason,
        "no data: the query returned no series (noData: inconclusive)"
    );
}

#[test]
fn missing_argument_and_unreachable_prometheus_have_their_exit_codes() {
    let (code, _, stderr) = analyze("error-rate.yaml", &[]);
    assert_eq!(code, 4, "{stderr}");
    // A command line that does not parse is bad usage too, not a verdict.
    let output = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["analyze", "--start", "yesterday"])
        .output()
        .expect("run vigil");
    assert_eq!(output.status.code(), Some(4));
    assert!(stderr.contains("rollout"), "{stderr}");

    let output = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args([
            "analyze",
            "-f",
            &fixture("error-rate.yaml"),
            "--arg",
            "rollout=healthy",
        ])
        .args(["--prometheus", "http://127.0.0.1:9"])
        .args([
            "--start",
            &rfc3339(T_END - 3600),
            "--end",
            &rfc3339(T_END - 60),
            "-o",
            "json",
        ])
        .output()
        .expect("run vigil");
    let json: Value = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
    assert_eq!(output.status.code(), Some(3), "{json:#}");
    assert_eq!(json["phase"], "Error");
    let reason = json["metricResults"][0]["measurements"][0]["reason"]
        .as_str()
        .unwrap_or_default();
    assert!(reason.starts_with("cannot reach"), "{reason}");
}

#[test]
fn a_template_without_an_address_queries_the_prometheus_given_and_needs_one() {
    let json = analyze_expecting(
        "error-rate-default-prometheus.yaml",
        &["rollout=healthy"],
        0,
        "Successful",
    );
    assert_eq!(measurements(&json).len(), 5);

    let output = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args([
            "analyze",
            "-f",
            &fixture("error-rate-default-prometheus.yaml"),
        ])
        .args(["--arg", "rollout=healthy"])
        .output()
        .expect("run vigil");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains("metrics[0] (error-rate): provider.prometheus.address: not set")
            && stderr.contains("--prometheus URL"),
        "{stderr}"
    );
}

#[test]
fn a_prometheus_that_is_not_an_http_url_is_bad_usage_naming_the_flag() {
    for bad in ["prometheus:9090", "http://p:9090/?q=1"] {
        let output = Command::new(env!("CARGO_BIN_EXE_vigil"))
            .args(["analyze", "-f", &fixture("error-rate.yaml")])
            .args(["--prometheus", bad])
            .output()
            .expect("run vigil");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(4), "{bad}: {stderr}");
        assert!(stderr.contains("--prometheus"), "{bad}: {stderr}");
    }
}

#[test]
fn shipped_http_error_rate_template_passes_healthy_and_fails_erroring() {
    let template = "analysis-templates/http-error-rate.yaml";
    analyze_expecting(
        template,
        &strs(&revisions("healthy", false)),
        0,
        "Successful",
    );
    let json = analyze_expecting(template, &strs(&revisions("erroring", false)), 1, "Failed");
    // failureLimit 1: the second failed measurement fails the metric.
    assert_eq!(measurements(&json).len(), 2);
    let json = analyze_expecting(
        template,
        &strs(&revisions("idle", false)),
        2,
        "Inconclusive",
    );
    let reason = measurements(&json)[0]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(reason.starts_with("no data"), "{reason}");
}

#[test]
fn shipped_http_latency_template_passes_fast_and_fails_slow_canaries() {
    let template = "analysis-templates/http-latency.yaml";
    analyze_expecting(
        template,
        &strs(&revisions("healthy", false)),
        0,
        "Successful",
    );
    analyze_expecting(template, &strs(&revisions("erroring", false)), 1, "Failed");
}

#[test]
fn shipped_istio_and_nginx_error_rate_templates_read_their_metric_names() {
    let json = analyze_expecting(
        "analysis-templates/istio-error-rate.yaml",
        &["service=checkout-canary", "namespace=shop"],
        1,
        "Failed",
    );
    assert_eq!(measurements(&json)[0]["value"], "0.1");
    let json = analyze_expecting(
        "analysis-templates/nginx-error-rate.yaml",
        &["service=checkout-canary", "ingress=checkout"],
        0,
        "Successful",
    );
    assert_eq!(measurements(&json)[0]["value"], "0.001");
}

#[test]
fn shipped_istio_and_nginx_latency_templates_read_their_histograms() {
    let json = analyze_expecting(
        "analysis-templates/istio-latency.yaml",
        &["service=checkout-canary", "namespace=shop"],
        1,
        "Failed",
    );
    // Milliseconds turned into seconds by the template.
    assert_eq!(measurements(&json)[0]["value"], "1.75");
    let json = analyze_expecting(
        "analysis-templates/nginx-latency.yaml",
        &["service=checkout-canary", "ingress=checkout"],
        0,
        "Successful",
    );
    let p95: f64 = measurements(&json)[0]["value"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .expect("a number");
    assert!((p95 - 0.19375).abs() < 1e-6, "{p95}");
}

#[test]
fn shipped_sequential_template_fails_the_erroring_canary_at_its_first_look() {
    let template = "analysis-templates/sequential-error-counts.yaml";
    let json = analyze_expecting(template, &strs(&revisions("erroring", true)), 1, "Failed");
    // 60 of 600 canary requests failed against 6 of 1200: one interval is evidence enough.
    let taken = measurements(&json);
    assert_eq!(taken.len(), 1, "{json:#}");
    assert_eq!(taken[0]["value"], "canary 60/600 baseline 6/1200");
    // A healthy canary is never failed; with these few errors the test may not decide.
    let (code, json, stderr) = analyze(template, &strs(&revisions("healthy", true)));
    assert!(code == 0 || code == 2, "{json:#}\n{stderr}");
    assert_ne!(json["phase"], "Failed");
}

#[test]
fn shipped_mann_whitney_template_flags_the_slower_canary_only() {
    let template = "analysis-templates/mann-whitney-latency.yaml";
    analyze_expecting(
        template,
        &strs(&revisions("healthy", true)),
        0,
        "Successful",
    );
    let json = analyze_expecting(template, &strs(&revisions("erroring", true)), 1, "Failed");
    let reason = json["message"].as_str().unwrap_or_default();
    assert!(reason.contains("High"), "{reason}");
    // Each measurement names both arms' medians, which the report draws (issue 16).
    let measured = measurements(&json)[0]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        measured.contains("; canary median ") && measured.contains(", baseline median "),
        "{measured}"
    );
}

#[test]
fn shipped_scorecard_scores_the_metrics_together() {
    let template = "analysis-templates/kayenta-scorecard.yaml";
    let json = analyze_expecting(
        template,
        &strs(&revisions("healthy", true)),
        0,
        "Successful",
    );
    assert_eq!(json["score"]["round"], 3, "{json:#}");
    assert_eq!(json["score"]["score"], 100.0, "{json:#}");
    assert_eq!(json["score"]["classification"], "Pass", "{json:#}");

    // Slower and erroring: every metric High, the critical error ratio past ×2: score 0 at
    // the first round, and the run stops there.
    let json = analyze_expecting(template, &strs(&revisions("erroring", true)), 1, "Failed");
    assert_eq!(json["score"]["round"], 1, "{json:#}");
    assert_eq!(json["score"]["score"], 0.0, "{json:#}");
    assert_eq!(json["score"]["classification"], "Fail", "{json:#}");
    let reason = json["score"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("critical metric(s): error-ratio"),
        "{reason}"
    );
    assert!(reason.contains("latency-p99 High"), "{reason}");
    let message = json["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("below the marginal threshold"),
        "{message}"
    );
}

/// Runs `vigil analyze` live (a job metric needs no Prometheus).
fn analyze_live(template: &str, args: &[&str]) -> (i32, Value, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_vigil"));
    command.args(["analyze", "-f", &fixture(template), "--output", "json"]);
    for arg in args {
        command.args(["--arg", arg]);
    }
    let output = command.output().expect("run vigil");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let json = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (output.status.code().unwrap_or(-1), json, stderr)
}

#[test]
fn a_job_metric_is_judged_by_its_process_exit_status_with_its_output() {
    let (code, json, stderr) = analyze_live("smoke-job.yaml", &["exit=0"]);
    assert_eq!(
        (code, json["phase"].as_str()),
        (0, Some("Successful")),
        "{json:#}\n{stderr}"
    );
    let reason = measurements(&json)[0]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(reason.contains("hello from the smoke test"), "{reason}");
    let (code, json, stderr) = analyze_live("smoke-job.yaml", &["exit=7"]);
    assert_eq!(
        (code, json["phase"].as_str()),
        (1, Some("Failed")),
        "{json:#}\n{stderr}"
    );
    let reason = measurements(&json)[0]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        reason.contains("exit status 7") && reason.contains("hello from the smoke test"),
        "{reason}"
    );
}

#[test]
fn a_job_metric_cannot_be_replayed_and_says_so() {
    let (code, _, stderr) = analyze("smoke-job.yaml", &["exit=0"]);
    assert_eq!(code, 4, "{stderr}");
    assert!(stderr.contains("cannot be replayed"), "{stderr}");
}

/// Issue 16, friction 7: a gate that starts right after a previous canary was rolled back.
/// Selected by `role="canary"` (the control, the shipped template's former shape), its first
/// measurement counts the previous canary's 5xx and fails a canary that served none (a gate
/// with `failureLimit: 0`, as the demo's, would fail the release there); the
/// shipped template selects by `canary-revision` and counts only this canary's requests.
#[test]
fn a_gate_starting_right_after_a_previous_canary_counts_only_the_current_canary() {
    let (start, end) = (RECANARY_START + 60, RECANARY_START + 60 + 300);
    let (code, json, stderr) = analyze_between(
        "http-error-rate-by-role.yaml",
        &["rollout=recanary"],
        start,
        end,
    );
    assert_eq!(
        code, 0,
        "failureLimit 1 absorbs one failure: {json:#}\n{stderr}"
    );
    let first = &measurements(&json)[0];
    assert_eq!(first["phase"], "Failed", "{json:#}");
    let value: f64 = first["value"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .expect("a number");
    assert!(
        value > 0.1,
        "the control counts the previous canary's errors: {value}"
    );

    let (code, json, stderr) = analyze_between(
        "analysis-templates/http-error-rate.yaml",
        &["rollout=recanary", "canary-revision=recanary-new"],
        start,
        end,
    );
    assert_eq!(
        (code, json["phase"].as_str()),
        (0, Some("Successful")),
        "{json:#}\n{stderr}"
    );
    let taken = measurements(&json);
    assert_eq!(taken.len(), 5, "{json:#}");
    for m in taken {
        assert_eq!(m["value"], "0", "{json:#}");
    }
}

/// Runs `vigil analyze` live on the template file `path` with `flags` before the `--arg`s.
fn analyze_live_file(path: &Path, flags: &[&str], args: &[&str]) -> (i32, Value, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_vigil"));
    command
        .arg("analyze")
        .arg("-f")
        .arg(path)
        .args(["--output", "json"])
        .args(flags);
    for arg in args {
        command.args(["--arg", arg]);
    }
    let output = command.output().expect("run vigil");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let json = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (output.status.code().unwrap_or(-1), json, stderr)
}

/// A job metric measured `count` times, `interval` apart, each a process printing a line.
const REPEATED_JOB: &str = r#"apiVersion: vigil.dev/v1alpha1
kind: AnalysisTemplate
metadata:
  name: repeated-job
spec:
  metrics:
    - name: smoke
      interval: 1s
      count: 2
      provider:
        job:
          timeout: 60s
          spec:
            template:
              spec:
                restartPolicy: Never
                containers:
                  - name: smoke
                    image: busybox
                    command: ["sh", "-c", "echo ok"]
"#;

/// Issue 16, friction 8: a live run printed nothing until it ended. Now a line when it starts
/// and one per measurement on stderr (stdout keeps only the result); `--quiet` keeps it silent.
#[test]
fn a_live_run_shows_each_measurement_on_stderr_unless_quiet() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("repeated.yaml");
    std::fs::write(&path, REPEATED_JOB).expect("write template");

    let (code, json, stderr) = analyze_live_file(&path, &[], &[]);
    assert_eq!(code, 0, "{json:#}\n{stderr}");
    assert!(
        stderr.contains("live run of 1 metric(s) (smoke)"),
        "{stderr}"
    );
    for number in ["#1", "#2"] {
        assert!(
            stderr
                .lines()
                .any(|l| l.contains(&format!("smoke {number}  Successful"))),
            "a line for measurement {number}: {stderr}"
        );
    }

    let (code, json, stderr) = analyze_live_file(&path, &["--quiet"], &[]);
    assert_eq!(code, 0, "{json:#}\n{stderr}");
    assert!(!stderr.contains("smoke #1"), "--quiet: {stderr}");
}

/// Issue 16, friction 8: an invalid template was refused with serde's `document 0: invalid
/// type ...`; now with the paths of the fields, as `vigil lint` gives them.
#[test]
fn an_invalid_template_is_refused_naming_its_fields_as_lint_does() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bad.yaml");
    let bad = REPEATED_JOB
        .replace(
            "count: 2",
            "count: 2\n      successCondition: [result, \"< 1\"]",
        )
        .replace("interval: 1s", "interval: 1s\n      failureLimt: 1");
    std::fs::write(&path, bad).expect("write template");
    let (code, _, stderr) = analyze_live_file(&path, &[], &[]);
    assert_eq!(code, 4, "{stderr}");
    assert!(
        stderr.contains("spec.metrics[0].successCondition"),
        "names the field: {stderr}"
    );
    assert!(
        stderr.contains("spec.metrics[0].failureLimt"),
        "names every field lint names: {stderr}"
    );
    assert!(!stderr.contains("document 0"), "{stderr}");
}

/// The shipped templates need the built-in `canary-revision`, which no Rollout passes to
/// `vigil analyze`: leaving it out says which `--arg` is missing and where its value is.
#[test]
fn a_missing_builtin_argument_says_what_to_pass() {
    let (code, _, stderr) = analyze(
        "analysis-templates/http-error-rate.yaml",
        &["rollout=healthy"],
    );
    assert_eq!(code, 4, "{stderr}");
    assert!(
        stderr.contains("--arg canary-revision=VALUE is needed")
            && stderr.contains("vigil get rollout NAME"),
        "{stderr}"
    );
}

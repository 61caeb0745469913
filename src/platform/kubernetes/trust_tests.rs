//! Trust boundaries of the controller, against the in-process API server and real HTTP
//! servers on 127.0.0.1: what a writer of templates, Rollouts and AnalysisRuns can make the
//! controller read, send and store.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::analysis_controller;
use super::context::Context;
use crate::analysis::provider::prometheus::ConcurrencyLimiter;
use crate::analysis::provider::resolve::Origin;
use crate::api::AnalysisRun;
use crate::metrics::Metrics;
use crate::testing::apiserver::ApiServer;

pub(super) const NS: &str = "shop";
pub(super) const RUNS: &str = "vigil.dev/v1alpha1/analysisruns";
pub(super) const SECRETS: &str = "v1/secrets";

/// A Prometheus stand-in on 127.0.0.1: records every request (head and body, as text) and
/// answers each with `answer` (a vector with one sample of value 0), or never answers when
/// `answer` is false.
pub(super) struct FakePrometheus {
    pub address: String,
    pub requests: Arc<Mutex<Vec<String>>>,
}

/// How the Prometheus stand-in answers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Answer {
    /// A vector with one sample of value 0.
    Value,
    /// Never: the connection stays open.
    Silent,
    /// HTTP 400 whose error echoes the query, as Prometheus does for a bad query.
    EchoError,
}

impl FakePrometheus {
    pub async fn start(answer: bool) -> FakePrometheus {
        Self::answering(if answer {
            Answer::Value
        } else {
            Answer::Silent
        })
        .await
    }

    pub async fn answering(answer: Answer) -> FakePrometheus {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = format!("http://{}", listener.local_addr().expect("addr"));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let recorded = requests.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let recorded = recorded.clone();
                tokio::spawn(async move {
                    let mut buffer = vec![0u8; 64 * 1024];
                    let mut read = 0;
                    // One request per connection is enough for these tests: read the head.
                    while !buffer[..read].windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buffer[read..]).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => read += n,
                        }
                    }
                    let text = String::from_utf8_lossy(&buffer[..read]).into_owned();
                    recorded.lock().expect("requests").push(text.clone());
                    if answer == Answer::Silent {
                        // Hold the connection open and never answer.
                        std::future::pending::<()>().await;
                    }
                    let (status, body) = if answer == Answer::EchoError {
                        let target = text.split_whitespace().nth(1).unwrap_or("/");
                        let query = url::Url::parse(&format!("http://x{target}"))
                            .ok()
                            .and_then(|u| {
                                u.query_pairs()
                                    .find(|(k, _)| k == "query")
                                    .map(|(_, v)| v.into_owned())
                            })
                            .unwrap_or_default();
                        let error = json!({"status": "error", "errorType": "bad_data",
                            "error": format!("1:1: parse error in {query}")});
                        ("400 Bad Request", error.to_string())
                    } else {
                        ("200 OK", r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1800000000,"0"]}]}}"#.to_owned())
                    };
                    let response = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(response.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        FakePrometheus { address, requests }
    }

    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().expect("requests").clone()
    }
}

pub(super) fn context(
    server: &ApiServer,
    credential_dirs: Vec<std::path::PathBuf>,
) -> Arc<Context> {
    let mut ctx = Context::new(
        server.client(),
        Metrics::default(),
        ConcurrencyLimiter::default(),
        Some("vigil-0".into()),
    );
    ctx.credential_dirs = credential_dirs;
    Arc::new(ctx)
}

/// A context whose `--credential-dir` files may be sent to `origins` (`--credential-origin`).
pub(super) fn context_sending_files_to(
    server: &ApiServer,
    credential_dirs: Vec<std::path::PathBuf>,
    origins: &[&str],
) -> Arc<Context> {
    let mut ctx = Context::new(
        server.client(),
        Metrics::default(),
        ConcurrencyLimiter::default(),
        Some("vigil-0".into()),
    );
    ctx.credential_dirs = credential_dirs;
    ctx.credential_origins = origins
        .iter()
        .map(|o| Origin::parse_listed(o).expect("origin"))
        .collect();
    Arc::new(ctx)
}

/// An AnalysisRun `name` with one metric measured once against `address` with `auth`.
pub(super) fn run_with(name: &str, address: &str, query: &str, auth: Value, args: Value) -> Value {
    json!({
        "apiVersion": "vigil.dev/v1alpha1", "kind": "AnalysisRun",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "args": args,
            "metrics": [{
                "name": "errors", "count": 1, "successCondition": "result < 1",
                "provider": {"prometheus": {"address": address, "query": query,
                                            "timeout": "5s", "auth": auth}}
            }]
        }
    })
}

/// Stores `run` and reconciles it once; the stored object afterwards.
pub(super) async fn reconcile_stored(server: &ApiServer, ctx: &Arc<Context>, run: Value) -> Value {
    let name = run["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let stored = server.put_json(RUNS, run).expect("store run");
    let run: AnalysisRun = serde_json::from_value(stored).expect("run");
    let result = tokio::time::timeout(
        Duration::from_secs(60),
        analysis_controller::reconcile(Arc::new(run), ctx.clone()),
    )
    .await
    .expect("reconcile in time");
    assert!(result.is_ok(), "reconcile failed: {result:?}");
    server.get_json(RUNS, Some(NS), &name).expect("run stored")
}

pub(super) fn phase_and_message(run: &Value) -> (String, String) {
    let status = &run["status"];
    (
        status["phase"].as_str().unwrap_or_default().to_owned(),
        status["message"].as_str().unwrap_or_default().to_owned(),
    )
}

pub(super) fn secret(name: &str, key: &str, value: &str, opted_in: bool) -> Value {
    let data = k8s_openapi::ByteString(value.as_bytes().to_vec());
    let mut secret = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": NS},
        "data": {key: serde_json::to_value(data).expect("bytes")}
    });
    if opted_in {
        secret["metadata"]["labels"] = json!({"vigil.dev/analysis-credential": "true"});
    }
    secret
}

/// An opted-in Secret whose values may be sent to `origins` (the annotation's text).
pub(super) fn secret_for(name: &str, key: &str, value: &str, origins: &str) -> Value {
    let mut secret = secret(name, key, value, true);
    secret["metadata"]["annotations"] = json!({"vigil.dev/analysis-credential-origins": origins});
    secret
}

#[tokio::test]
async fn a_template_cannot_send_the_service_account_token_without_a_credential_dir() {
    let server = ApiServer::start();
    let prometheus = FakePrometheus::start(true).await;
    let ctx = context(&server, Vec::new());
    let token = "/var/run/secrets/kubernetes.io/serviceaccount/token";
    let run = run_with(
        "steal-token",
        &prometheus.address,
        "up",
        json!({"bearerToken": {"file": token}}),
        json!([]),
    );
    let stored = reconcile_stored(&server, &ctx, run).await;
    let (phase, message) = phase_and_message(&stored);
    assert_eq!(phase, "Error", "{stored}");
    assert!(message.contains(token), "{message}");
    assert!(message.contains("--credential-dir"), "{message}");
    assert!(prometheus.requests().is_empty(), "nothing is sent");
}

#[tokio::test]
async fn a_file_outside_the_credential_dir_is_refused_even_through_a_symlink() {
    let server = ApiServer::start();
    let prometheus = FakePrometheus::start(true).await;
    let allowed = tempfile::tempdir().expect("tempdir");
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let outside = elsewhere.path().join("token");
    std::fs::write(&outside, "controller-own-token").expect("write");
    let link = allowed.path().join("innocent");
    std::os::unix::fs::symlink(&outside, &link).expect("symlink");
    let dirs = vec![std::fs::canonicalize(allowed.path()).expect("canonical")];
    let ctx = context_sending_files_to(&server, dirs, &[&prometheus.address]);
    for (name, path) in [
        ("direct", outside.display().to_string()),
        ("via-symlink", link.display().to_string()),
        (
            "via-dotdot",
            // Both temporary directories are siblings: climb out of the allowed one.
            format!(
                "{}/../{}/token",
                allowed.path().display(),
                elsewhere
                    .path()
                    .file_name()
                    .expect("name")
                    .to_string_lossy()
            ),
        ),
    ] {
        let run = run_with(
            name,
            &prometheus.address,
            "up",
            json!({"bearerToken": {"file": path}}),
            json!([]),
        );
        let stored = reconcile_stored(&server, &ctx, run).await;
        let (phase, message) = phase_and_message(&stored);
        assert_eq!(phase, "Error", "{name}: {stored}");
        assert!(message.contains("--credential-dir"), "{name}: {message}");
    }
    assert!(prometheus.requests().is_empty(), "nothing is sent");
}

#[tokio::test]
async fn a_file_credential_under_the_credential_dir_is_sent() {
    let server = ApiServer::start();
    let prometheus = FakePrometheus::start(true).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let token = dir.path().join("prometheus-token");
    std::fs::write(&token, "operator-token\n").expect("write");
    let ctx = context_sending_files_to(
        &server,
        vec![std::fs::canonicalize(dir.path()).expect("canonical")],
        &[&prometheus.address],
    );
    let run = run_with(
        "allowed-file",
        &prometheus.address,
        "up",
        json!({"bearerToken": {"file": token.display().to_string()}}),
        json!([]),
    );
    let stored = reconcile_stored(&server, &ctx, run).await;
    assert_eq!(phase_and_message(&stored).0, "Successful", "{stored}");
    let requests = prometheus.requests();
    assert!(
        requests.iter().any(|r| r
            .to_ascii_lowercase()
            .contains("authorization: bearer operator-token")),
        "{requests:?}"
    );
}

#[tokio::test]
async fn a_secret_without_the_opt_in_label_is_refused_naming_it_and_the_label() {
    let server = ApiServer::start();
    let prometheus = FakePrometheus::start(true).await;
    server
        .put_json(SECRETS, secret("db-password", "token", "hunter2", false))
        .expect("secret");
    let ctx = context(&server, Vec::new());
    let run = run_with(
        "steal-secret",
        &prometheus.address,
        "up",
        json!({"bearerToken": {"secretKeyRef": {"name": "db-password", "key": "token"}}}),
        json!([]),
    );
    let stored = reconcile_stored(&server, &ctx, run).await;
    let (phase, message) = phase_and_message(&stored);
    assert_eq!(phase, "Error", "{stored}");
    assert!(message.contains("\"db-password\""), "{message}");
    assert!(
        message.contains("vigil.dev/analysis-credential"),
        "{message}"
    );
    assert!(prometheus.requests().is_empty(), "nothing is sent");
    assert!(!stored.to_string().contains("hunter2"));
}

#[tokio::test]
async fn a_secret_with_the_opt_in_label_is_sent() {
    let server = ApiServer::start();
    let prometheus = FakePrometheus::start(true).await;
    server
        .put_json(
            SECRETS,
            secret_for(
                "prometheus-auth",
                "token",
                "opted-in-token",
                &prometheus.address,
            ),
        )
        .expect("secret");
    let ctx = context(&server, Vec::new());
    let run = run_with(
        "opted-in",
        &prometheus.address,
        "up",
        json!({"bearerToken": {"secretKeyRef": {"name": "prometheus-auth", "key": "token"}}}),
        json!([]),
    );
    let stored = reconcile_stored(&server, &ctx, run).await;
    assert_eq!(phase_and_message(&stored).0, "Successful", "{stored}");
    let requests = prometheus.requests();
    assert!(
        requests.iter().any(|r| r
            .to_ascii_lowercase()
            .contains("authorization: bearer opted-in-token")),
        "{requests:?}"
    );
}

async fn wait_for_phase(server: &ApiServer, name: &str, phase: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(run) = server.get_json(RUNS, Some(NS), name)
            && run["status"]["phase"] == json!(phase)
        {
            return run;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "run {name} never reached {phase}: {:?}",
            server.get_json(RUNS, Some(NS), name)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn in_namespace(mut run: Value, namespace: &str) -> Value {
    run["metadata"]["namespace"] = json!(namespace);
    run
}

#[tokio::test]
async fn ten_runs_stuck_on_a_silent_prometheus_do_not_starve_another_namespace() {
    let server = ApiServer::start();
    let silent = FakePrometheus::start(false).await;
    let normal = FakePrometheus::start(true).await;
    let concurrency = 4;
    let mut ctx = Context::new(
        server.client(),
        Metrics::default(),
        ConcurrencyLimiter::default(),
        None,
    );
    ctx.analysis_slots = super::context::NamespaceSlots::new(super::context::namespace_slot_cap(
        usize::from(concurrency),
    ));
    let ctx = Arc::new(ctx);
    for i in 0..10 {
        // Distinct queries: identical ones in flight would share one request.
        let mut run = run_with(
            &format!("stuck-{i}"),
            &silent.address,
            &format!("up{{run=\"{i}\"}}"),
            json!(null),
            json!([]),
        );
        run["spec"]["metrics"][0]["provider"]["prometheus"]["timeout"] = json!("120s");
        server
            .put_json(RUNS, in_namespace(run, "greedy"))
            .expect("store");
    }
    let scope = super::WatchScope {
        namespace: None,
        selector: None,
        concurrency,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let controller = tokio::spawn({
        let ctx = ctx.clone();
        async move {
            analysis_controller::run(ctx, &scope, None, async {
                let _ = stopped.await;
            })
            .await;
        }
    });
    // Every greedy run has been looked at (those past the namespace's share come back later
    // without holding a slot) and some hold their query open, before the other namespace's
    // run exists. Without the share, the first four hold every slot and the rest wait.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while silent.requests().len() < 2 || ctx.metrics.reconciles.get() < 10 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the greedy runs took every slot: {} reconciles started, {} queries in flight",
            ctx.metrics.reconciles.get(),
            silent.requests().len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server
        .put_json(
            RUNS,
            in_namespace(
                run_with("fair", &normal.address, "up", json!(null), json!([])),
                "quiet",
            ),
        )
        .expect("store");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let fair = server.get_json(RUNS, Some("quiet"), "fair");
        if fair
            .as_ref()
            .is_some_and(|run| run["status"]["phase"] == json!("Successful"))
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the quiet namespace's run was starved: {fair:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        silent.requests().len() <= super::context::namespace_slot_cap(usize::from(concurrency)),
        "one namespace held more than its share: {} queries in flight",
        silent.requests().len()
    );
    let _ = stop.send(());
    controller.abort();
}

#[tokio::test]
async fn a_panicking_reconcile_does_not_stop_the_analysis_controller() {
    let server = ApiServer::start();
    let prometheus = FakePrometheus::start(true).await;
    let ctx = context(&server, Vec::new());
    let mut poisoned = run_with(
        "poisoned",
        &prometheus.address,
        "up",
        json!(null),
        json!([]),
    );
    poisoned["metadata"]["annotations"] =
        json!({analysis_controller::PANIC_FOR_TEST_ANNOTATION: "true"});
    server.put_json(RUNS, poisoned).expect("store");
    server
        .put_json(
            RUNS,
            run_with("healthy", &prometheus.address, "up", json!(null), json!([])),
        )
        .expect("store");
    let scope = super::WatchScope {
        namespace: Some(NS.to_owned()),
        selector: None,
        concurrency: 4,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let controller = tokio::spawn({
        let ctx = ctx.clone();
        async move {
            analysis_controller::run(ctx, &scope, None, async {
                let _ = stopped.await;
            })
            .await;
        }
    });
    wait_for_phase(&server, "healthy", "Successful").await;
    // A run created after the panic is still measured: the controller task lives on.
    server
        .put_json(
            RUNS,
            run_with("later", &prometheus.address, "up", json!(null), json!([])),
        )
        .expect("store");
    wait_for_phase(&server, "later", "Successful").await;
    assert!(!controller.is_finished(), "the controller task survived");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !ctx.metrics.encode().contains("reconcile_panicked") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}",
            ctx.metrics.encode()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ctx.backoff.failures(&format!("run/{NS}/poisoned")) >= 1);
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(30), controller)
        .await
        .expect("stops")
        .expect("no panic escaped the controller task");
}

#[tokio::test]
async fn a_controller_task_that_ends_makes_the_process_unready_and_fail() {
    for (label, ends) in [
        (
            "stream ended",
            Box::pin(async {}) as std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
        ),
        ("panicked", Box::pin(async { panic!("controller bug") })),
    ] {
        let ready = super::server::Readiness::default();
        ready.set(true);
        let (ended_tx, mut ended) = tokio::sync::mpsc::unbounded_channel();
        let never = super::spawn_controller("Rollout", std::future::pending(), ended_tx.clone());
        let _task = super::spawn_controller("AnalysisRun", ends, ended_tx);
        let outcome = tokio::time::timeout(
            Duration::from_secs(30),
            super::supervise(
                std::future::pending(),
                std::future::pending(),
                &mut ended,
                &ready,
            ),
        )
        .await
        .expect("supervise returns");
        match outcome {
            Err(super::RunError::StopController { controller, reason }) => {
                assert_eq!(controller, "AnalysisRun", "{label}");
                assert!(!reason.is_empty(), "{label}");
            }
            other => panic!("{label}: {other:?}"),
        }
        assert!(!ready.get(), "{label}: /readyz turns 503");
        never.abort();
    }
}

const MARKER: &str = "s3cr3t-\"marker\"-7f3a";

#[tokio::test]
async fn a_secret_argument_is_resolved_when_measuring_and_never_stored_even_in_errors() {
    let server = ApiServer::start();
    let ctx = context(&server, Vec::new());
    let args =
        json!([{"name": "tenant", "valueFrom": {"secretKeyRef": {"name": "tenant", "key": "id"}}}]);
    let query = r#"sum(up{tenant="{{args.tenant}}"})"#;
    for (name, answer) in [("fails", Answer::EchoError), ("passes", Answer::Value)] {
        let prometheus = FakePrometheus::answering(answer).await;
        server
            .put_json(
                SECRETS,
                secret_for("tenant", "id", MARKER, &prometheus.address),
            )
            .expect("secret");
        let run = run_with(name, &prometheus.address, query, json!(null), args.clone());
        let stored = reconcile_stored(&server, &ctx, run).await;
        let requests = prometheus.requests().join("\n");
        let sent: String =
            url::form_urlencoded::byte_serialize(br#"s3cr3t-\"marker\"-7f3a"#).collect();
        assert!(
            requests.contains(&sent),
            "{name}: the Secret's value was substituted (escaped) into the query sent: {requests}"
        );
        let text = stored.to_string();
        assert!(
            !text.contains("s3cr3t"),
            "{name}: stored run leaks the secret: {text}"
        );
        assert!(
            stored["spec"]["args"][0]["valueFrom"]["secretKeyRef"]["name"] == json!("tenant"),
            "{name}: the run keeps the reference: {text}"
        );
        if answer == Answer::EchoError {
            assert!(
                text.contains("<redacted>"),
                "{name}: the echoed query is redacted: {text}"
            );
        }
    }
    for events in ["v1/events", "events.k8s.io/v1/events"] {
        let all = serde_json::to_string(&server.list_json(events, None)).expect("json");
        assert!(!all.contains("s3cr3t"), "{events}: {all}");
    }
}

// Round 2: credentials bound to origins, bounded errors, no probing.

/// Every request `prometheus` received, as one text (to look for a credential in it).
fn all_requests(prometheus: &FakePrometheus) -> String {
    prometheus.requests().join("\n")
}

#[tokio::test]
async fn a_run_cannot_send_an_opted_in_secret_to_an_address_of_its_choosing() {
    let server = ApiServer::start();
    let legit = FakePrometheus::start(true).await;
    let evil = FakePrometheus::start(true).await;
    let evil_origin = Origin::parse_listed(&evil.address)
        .expect("origin")
        .to_string();
    server
        .put_json(
            SECRETS,
            secret_for("prom-auth", "token", "operator-token", &legit.address),
        )
        .expect("secret");
    server
        .put_json(SECRETS, secret("unbound", "token", "unbound-token", true))
        .expect("secret");
    let ctx = context(&server, Vec::new());
    let bearer =
        |name: &str| json!({"bearerToken": {"secretKeyRef": {"name": name, "key": "token"}}});
    let tenant_arg = |name: &str| json!([{"name": "tenant", "valueFrom": {"secretKeyRef": {"name": name, "key": "token"}}}]);
    let query = r#"up{tenant="{{args.tenant}}"}"#;
    let cases = [
        (
            "as-auth",
            run_with(
                "as-auth",
                &evil.address,
                "up",
                bearer("prom-auth"),
                json!([]),
            ),
        ),
        (
            "as-arg",
            run_with(
                "as-arg",
                &evil.address,
                query,
                json!(null),
                tenant_arg("prom-auth"),
            ),
        ),
        (
            "no-origins",
            run_with(
                "no-origins",
                &legit.address,
                "up",
                bearer("unbound"),
                json!([]),
            ),
        ),
    ];
    for (name, run) in cases {
        let stored = reconcile_stored(&server, &ctx, run).await;
        let (phase, message) = phase_and_message(&stored);
        assert_eq!(phase, "Error", "{name}: {stored}");
        assert!(
            message.contains("vigil.dev/analysis-credential-origins"),
            "{name}: names the annotation: {message}"
        );
        if name == "no-origins" {
            assert!(message.contains("\"unbound\""), "{name}: {message}");
        } else {
            assert!(message.contains("\"prom-auth\""), "{name}: {message}");
            assert!(message.contains(&evil_origin), "{name}: {message}");
        }
    }
    assert!(
        evil.requests().is_empty(),
        "nothing reaches the writer's address"
    );
    assert!(!all_requests(&legit).contains("unbound-token"));
}

#[tokio::test]
async fn a_run_cannot_send_a_credential_dir_file_to_an_address_of_its_choosing() {
    let server = ApiServer::start();
    let legit = FakePrometheus::start(true).await;
    let evil = FakePrometheus::start(true).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let token = dir.path().join("prom-token");
    std::fs::write(&token, "operator-token").expect("write");
    let dirs = vec![std::fs::canonicalize(dir.path()).expect("canonical")];
    let auth = json!({"bearerToken": {"file": token.display().to_string()}});
    for (name, origins) in [
        ("other-origin", vec![legit.address.as_str()]),
        ("no-origin", vec![]),
    ] {
        let ctx = context_sending_files_to(&server, dirs.clone(), &origins);
        let run = run_with(name, &evil.address, "up", auth.clone(), json!([]));
        let stored = reconcile_stored(&server, &ctx, run).await;
        let (phase, message) = phase_and_message(&stored);
        assert_eq!(phase, "Error", "{name}: {stored}");
        assert!(message.contains("--credential-origin"), "{name}: {message}");
    }
    assert!(
        evil.requests().is_empty(),
        "nothing reaches the writer's address"
    );
}

#[tokio::test]
async fn a_credential_is_not_downgraded_to_plain_http_when_https_is_listed() {
    let server = ApiServer::start();
    let prometheus = FakePrometheus::start(true).await;
    let https = prometheus.address.replacen("http://", "https://", 1);
    server
        .put_json(
            SECRETS,
            secret_for("prom-auth", "token", "operator-token", &https),
        )
        .expect("secret");
    let ctx = context(&server, Vec::new());
    let auth = json!({"bearerToken": {"secretKeyRef": {"name": "prom-auth", "key": "token"}}});
    let run = run_with("downgrade", &prometheus.address, "up", auth, json!([]));
    let stored = reconcile_stored(&server, &ctx, run).await;
    let (phase, message) = phase_and_message(&stored);
    assert_eq!(phase, "Error", "{stored}");
    assert!(message.contains("clear text"), "{message}");
    assert!(prometheus.requests().is_empty(), "nothing is sent");
}

#[tokio::test]
async fn a_huge_address_is_stored_as_a_bounded_message() {
    use crate::analysis::provider::MAX_TEXT_BYTES;
    let server = ApiServer::start();
    let ctx = context(&server, Vec::new());
    // Not a URL: the parse error names the address as written.
    let address = format!("http://exa mple/{}", "a".repeat(1_400 * 1024));
    let run = run_with("huge-address", &address, "up", json!(null), json!([]));
    let stored = reconcile_stored(&server, &ctx, run).await;
    let (phase, message) = phase_and_message(&stored);
    assert_eq!(phase, "Error", "the status write succeeded");
    assert!(
        message.len() <= MAX_TEXT_BYTES + 64,
        "message of {} bytes",
        message.len()
    );
}

#[tokio::test]
async fn a_run_over_the_size_bounds_is_refused_before_any_credential_is_read() {
    let server = ApiServer::start();
    let prometheus = FakePrometheus::start(true).await;
    let ctx = context(&server, Vec::new());
    let metric = |i: usize| {
        json!({"name": format!("m{i}"), "count": 1, "successCondition": "result < 1",
        "provider": {"prometheus": {"address": prometheus.address, "query": "up",
            "auth": {"bearerToken": if i == 0 {
                json!({"file": "/etc/hostname"})
            } else {
                json!({"secretKeyRef": {"name": "operator-token", "key": "token"}})
            }}}}})
    };
    let metrics: Vec<Value> = (0..=crate::analysis::run::MAX_METRICS_PER_RUN)
        .map(metric)
        .collect();
    let run = json!({
        "apiVersion": "vigil.dev/v1alpha1", "kind": "AnalysisRun",
        "metadata": {"name": "too-many", "namespace": NS},
        "spec": {"metrics": metrics}
    });
    let stored = reconcile_stored(&server, &ctx, run).await;
    let (phase, message) = phase_and_message(&stored);
    assert_eq!(phase, "Error", "{stored}");
    assert!(
        message.contains("at most 50") && !message.contains("/etc/hostname"),
        "the bound is checked first: {message}"
    );
    assert!(prometheus.requests().is_empty(), "nothing is sent");
    let secret_reads: Vec<_> = server
        .request_log()
        .into_iter()
        .filter(|(_, path)| path.contains("/secrets"))
        .collect();
    assert!(
        secret_reads.is_empty(),
        "no Secret is read: {secret_reads:?}"
    );
}

#[tokio::test]
async fn probing_a_path_outside_the_credential_dir_reads_like_a_missing_one() {
    let server = ApiServer::start();
    let prometheus = FakePrometheus::start(true).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let dirs = vec![std::fs::canonicalize(dir.path()).expect("canonical")];
    let ctx = context_sending_files_to(&server, dirs, &[&prometheus.address]);
    let exists = std::env::current_exe().expect("exe").display().to_string();
    let missing = format!("{}/no-such-file", dir.path().display());
    let mut messages = Vec::new();
    for (name, path) in [
        ("exists", exists.as_str()),
        ("missing", missing.as_str()),
        ("absent", "/no/such/path"),
    ] {
        let auth = json!({"bearerToken": {"file": path}});
        let run = run_with(name, &prometheus.address, "up", auth, json!([]));
        let stored = reconcile_stored(&server, &ctx, run).await;
        let (phase, message) = phase_and_message(&stored);
        assert_eq!(phase, "Error", "{name}: {stored}");
        messages.push(message.replace(path, "PATH"));
    }
    assert!(
        messages.iter().all(|m| *m == messages[0]),
        "one text whether the file exists or not: {messages:#?}"
    );
}

#[tokio::test]
async fn probing_for_a_secret_that_does_not_exist_reads_like_an_unlabelled_one() {
    let server = ApiServer::start();
    let prometheus = FakePrometheus::start(true).await;
    server
        .put_json(SECRETS, secret("exists", "token", "hunter2", false))
        .expect("secret");
    let ctx = context(&server, Vec::new());
    let mut messages = Vec::new();
    for name in ["exists", "absent"] {
        let auth = json!({"bearerToken": {"secretKeyRef": {"name": name, "key": "token"}}});
        let run = run_with(
            &format!("probe-{name}"),
            &prometheus.address,
            "up",
            auth,
            json!([]),
        );
        let stored = reconcile_stored(&server, &ctx, run).await;
        let (phase, message) = phase_and_message(&stored);
        assert_eq!(phase, "Error", "{name}: {stored}");
        assert!(
            message.contains("vigil.dev/analysis-credential"),
            "{message}"
        );
        messages.push(message.replace(name, "NAME"));
    }
    assert_eq!(messages[0], messages[1]);
}

#[tokio::test]
async fn a_fifo_named_as_a_credential_file_does_not_block_the_reconcile() {
    let server = ApiServer::start();
    let prometheus = FakePrometheus::start(true).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let fifo = dir.path().join("token");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(made.success());
    let dirs = vec![std::fs::canonicalize(dir.path()).expect("canonical")];
    let ctx = context_sending_files_to(&server, dirs, &[&prometheus.address]);
    let auth = json!({"bearerToken": {"file": fifo.display().to_string()}});
    let run = run_with("fifo", &prometheus.address, "up", auth, json!([]));
    // reconcile_stored fails the test if the reconcile does not end (a blocked open).
    let stored = reconcile_stored(&server, &ctx, run).await;
    let (phase, message) = phase_and_message(&stored);
    assert_eq!(phase, "Error", "{stored}");
    assert!(message.contains("not a regular file"), "{message}");
}

/// Collects every log line written while it is the default subscriber.
#[derive(Clone, Default)]
struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for CapturedLogs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("logs").extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_secret_argument_never_reaches_the_log_when_prometheus_times_out() {
    let logs = CapturedLogs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(move || writer.clone())
        .finish();
    // This test's runtime is single-threaded: the queries are made on this thread.
    let _guard = tracing::subscriber::set_default(subscriber);
    let server = ApiServer::start();
    let ctx = context(&server, Vec::new());
    let prometheus = FakePrometheus::answering(Answer::Silent).await;
    server
        .put_json(
            SECRETS,
            secret_for("tenant", "id", MARKER, &prometheus.address),
        )
        .expect("secret");
    let args =
        json!([{"name": "tenant", "valueFrom": {"secretKeyRef": {"name": "tenant", "key": "id"}}}]);
    let query = r#"sum(up{tenant="{{args.tenant}}"})"#;
    let run = run_with("silent", &prometheus.address, query, json!(null), args);
    let stored = reconcile_stored(&server, &ctx, run).await;
    assert!(!prometheus.requests().is_empty(), "the query was sent");
    let logged = String::from_utf8_lossy(&logs.0.lock().expect("logs")).into_owned();
    assert!(
        logged.contains("Prometheus query timed out"),
        "the timeout is logged: {logged}"
    );
    assert!(
        !logged.contains("s3cr3t"),
        "the log leaks the secret: {logged}"
    );
    assert!(!stored.to_string().contains("s3cr3t"));
}

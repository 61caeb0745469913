//! The `web` metric provider against real HTTP servers on 127.0.0.1: every outcome of a
//! measurement, the request it sends, where its credentials may go, and what is stored.

mod support;

use std::time::Duration;

use jiff::Timestamp;
use serde_json::json;
use support::fake_http::{FakeServer, Reply};
use url::Url;
use vigil::analysis::driver::{self, MeasureAt, MetricClient};
use vigil::analysis::measure::{Measured, measure_web};
use vigil::analysis::provider::measurement::ProviderError;
use vigil::analysis::provider::prometheus::{ConcurrencyLimiter, MAX_BODY_BYTES};
use vigil::analysis::provider::resolve::{
    CommandLinePrometheus, NoSecrets, Origin, SecretReader, web_client_config,
};
use vigil::analysis::provider::web::{WebClient, WebClientConfig};
use vigil::api::{AnalysisPhase, AnalysisRunSpec, Metric};
use vigil::http_client::{EgressError, EgressGuard};
use vigil::platform::kubernetes::resources::{PrefetchedSecrets, SecretValue};

const AT: &str = "2026-01-01T00:00:00Z";

fn at() -> Timestamp {
    AT.parse().expect("timestamp")
}

/// A web metric to `url` (joined to `path`) from its JSON form.
fn metric(url: &Url, path: &str, fields: serde_json::Value) -> Metric {
    let mut web = json!({"url": url.join(path).expect("url").to_string()});
    if let (Some(web), Some(extra)) = (web.as_object_mut(), fields.get("web")) {
        for (k, v) in extra.as_object().into_iter().flatten() {
            web.insert(k.clone(), v.clone());
        }
    }
    let mut metric = json!({"name": "check", "provider": {"web": web}});
    if let (Some(metric), Some(fields)) = (metric.as_object_mut(), fields.as_object()) {
        for (k, v) in fields.iter().filter(|(k, _)| *k != "web") {
            metric.insert(k.clone(), v.clone());
        }
    }
    serde_json::from_value(metric).expect("metric")
}

fn client(metric: &Metric, secrets: &dyn SecretReader) -> Result<WebClient, String> {
    let web = metric.provider.web.as_ref().expect("a web metric");
    let config = web_client_config(web, secrets).map_err(|e| e.to_string())?;
    WebClient::new(config, &ConcurrencyLimiter::default()).map_err(|e| e.to_string())
}

async fn measure(metric: &Metric) -> Measured {
    support::install_crypto_provider();
    let client = client(metric, &NoSecrets).expect("client");
    measure_web(&client, metric, at()).await
}

fn reason(measured: &Measured) -> String {
    measured.record.reason.clone().unwrap_or_default()
}

async fn answering(body: &'static str) -> FakeServer {
    FakeServer::start(move |_| Reply::new(200, body)).await
}

#[tokio::test]
async fn a_value_at_the_json_path_is_judged_successful_or_failed_by_its_condition() {
    let server = answering(r#"{"data": {"ok": true, "errorRate": 0.02}}"#).await;
    let passing = metric(
        &server.url,
        "/api/v1/measurement?service=checkout",
        json!({"successCondition": "result < 0.05", "web": {"jsonPath": "{$.data.errorRate}"}}),
    );
    let measured = measure(&passing).await;
    assert_eq!(
        measured.record.phase,
        AnalysisPhase::Successful,
        "{measured:?}"
    );
    assert_eq!(measured.record.value.as_deref(), Some("0.02"));
    assert_eq!(
        reason(&measured),
        "result 0.02 meets successCondition `result < 0.05`"
    );

    let failing = metric(
        &server.url,
        "/",
        json!({"successCondition": "result < 0.01", "web": {"jsonPath": "{$.data.errorRate}"}}),
    );
    assert_eq!(measure(&failing).await.record.phase, AnalysisPhase::Failed);

    // Argo's own example: the object under `data`, a boolean inside it.
    let object = metric(
        &server.url,
        "/",
        json!({"successCondition": "result.ok && result.errorRate <= 0.05", "web": {"jsonPath": "{$.data}"}}),
    );
    assert_eq!(
        measure(&object).await.record.phase,
        AnalysisPhase::Successful
    );
    let boolean = metric(
        &server.url,
        "/",
        json!({"failureCondition": "result == false", "web": {"jsonPath": "$.data.ok"}}),
    );
    assert_eq!(
        measure(&boolean).await.record.phase,
        AnalysisPhase::Successful
    );
    let request = &server.stats.heads()[0];
    assert!(
        request.starts_with("GET /api/v1/measurement?service=checkout HTTP/1.1"),
        "{request}"
    );
}

#[tokio::test]
async fn several_matches_make_a_list_that_all_and_exists_can_judge() {
    let server =
        answering(r#"{"series": [{"pod": "a", "value": 0.01}, {"pod": "b", "value": 0.2}]}"#).await;
    let all_low = metric(
        &server.url,
        "/",
        json!({"successCondition": "result.all(v, v < 0.1)", "web": {"jsonPath": "$.series[*].value"}}),
    );
    let measured = measure(&all_low).await;
    assert_eq!(measured.record.phase, AnalysisPhase::Failed, "{measured:?}");
    assert_eq!(measured.record.value.as_deref(), Some("[0.01,0.2]"));
    let any_high = metric(
        &server.url,
        "/",
        json!({"failureCondition": "result.exists(s, s.value > 0.5)", "web": {"jsonPath": "$.series"}}),
    );
    assert_eq!(
        measure(&any_high).await.record.phase,
        AnalysisPhase::Successful
    );
}

#[tokio::test]
async fn a_null_at_the_path_is_no_data_and_follows_the_no_data_policy() {
    let server = answering(r#"{"data": {"value": null}}"#).await;
    let metric = metric(
        &server.url,
        "/",
        json!({"successCondition": "result < 1", "noData": "fail", "web": {"jsonPath": "$.data.value"}}),
    );
    let measured = measure(&metric).await;
    assert_eq!(measured.record.phase, AnalysisPhase::Failed);
    assert!(reason(&measured).starts_with("no data:"), "{measured:?}");
}

/// Measures `metric` and returns its reason, checking it is an Error.
async fn error_reason(metric: &Metric) -> String {
    let measured = measure(metric).await;
    assert_eq!(measured.record.phase, AnalysisPhase::Error, "{measured:?}");
    reason(&measured)
}

#[tokio::test]
async fn an_unreachable_server_is_an_error_naming_it() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    let url = Url::parse(&format!("http://127.0.0.1:{port}/")).expect("url");
    let reason = error_reason(&metric(
        &url,
        "/x?key=secret",
        json!({"successCondition": "result"}),
    ))
    .await;
    assert!(
        reason.starts_with(&format!(
            "cannot reach http://127.0.0.1:{port} after 1 attempt(s)"
        )),
        "{reason}"
    );
    assert!(!reason.contains("secret"), "no query in errors: {reason}");
    assert!(!reason.contains("/x"), "no path in errors: {reason}");
}

#[tokio::test]
async fn a_slow_server_times_out_after_timeout_seconds() {
    let server = FakeServer::start(|_| Reply::new(200, "{}").delay(Duration::from_secs(30))).await;
    let reason = error_reason(&metric(
        &server.url,
        "/",
        json!({"successCondition": "result", "web": {"timeoutSeconds": 1}}),
    ))
    .await;
    assert_eq!(reason, "no answer within 1s (after 1 attempt(s))");
}

#[tokio::test]
async fn an_http_error_status_is_an_error_with_the_body() {
    let server = FakeServer::start(|_| Reply::new(500, "database on fire")).await;
    let reason = error_reason(&metric(
        &server.url,
        "/",
        json!({"successCondition": "result"}),
    ))
    .await;
    assert_eq!(reason, "HTTP 500 after 1 attempt(s): database on fire");
    assert_eq!(
        server.stats.requests(),
        1,
        "one attempt: a POST may not be safe to repeat"
    );
}

#[tokio::test]
async fn an_answer_that_is_not_json_is_an_error_saying_so() {
    let server = answering("<html>login</html>").await;
    let reason = error_reason(&metric(
        &server.url,
        "/",
        json!({"successCondition": "result"}),
    ))
    .await;
    assert!(reason.starts_with("the answer is not JSON:"), "{reason}");
    assert!(reason.contains("<html>login</html>"), "{reason}");
}

#[tokio::test]
async fn no_value_at_the_path_is_an_error_naming_the_path() {
    let server = answering(r#"{"data": {"other": 1}}"#).await;
    let reason = error_reason(&metric(
        &server.url,
        "/",
        json!({"successCondition": "result", "web": {"jsonPath": "{$.data.ok}"}}),
    ))
    .await;
    assert_eq!(
        reason,
        r#"no value at jsonPath {$.data.ok} in the answer: {"data":{"other":1}}"#
    );
}

#[tokio::test]
async fn a_huge_body_is_refused_unread() {
    let huge: &'static str =
        Box::leak(format!("[{}0]", "0,".repeat(MAX_BODY_BYTES / 2)).into_boxed_str());
    let server = answering(huge).await;
    let reason = error_reason(&metric(
        &server.url,
        "/",
        json!({"successCondition": "true"}),
    ))
    .await;
    assert!(
        reason.starts_with(&format!("the answer is larger than {MAX_BODY_BYTES} bytes")),
        "{reason}"
    );
}

#[tokio::test]
async fn a_redirect_is_not_followed() {
    let elsewhere = answering("true").await;
    let target = elsewhere.url.join("/steal").expect("url").to_string();
    let server = FakeServer::start(move |_| Reply::new(302, "").header("Location", &target)).await;
    let reason = error_reason(&metric(
        &server.url,
        "/",
        json!({"successCondition": "result", "web": {"headers": [{"key": "X-Api-Key", "value": "k"}]}}),
    ))
    .await;
    assert!(
        reason.starts_with(&format!(
            "HTTP 302 redirect to {}",
            elsewhere.url.join("/steal").expect("url")
        )),
        "{reason}"
    );
    assert_eq!(
        elsewhere.stats.requests(),
        0,
        "the redirect target was never asked"
    );
}

#[tokio::test]
async fn post_sends_the_body_and_headers_as_written_with_arguments_escaped() {
    support::install_crypto_provider();
    let server =
        answering(r#"{"data": {"actor": {"account": {"nrql": {"results": [{"rate": 0.001}]}}}}}"#)
            .await;
    let template: vigil::api::AnalysisTemplateSpec = serde_json::from_value(json!({
        "args": [{"name": "app"}],
        "metrics": [{
            "name": "error-rate",
            "successCondition": "result < 0.01",
            "provider": {"web": {
                "url": server.url.join("/graphql").expect("url").to_string(),
                "method": "POST",
                "headers": [{"key": "API-Key", "value": "literal-key"}, {"key": "X-App", "value": "{{args.app}}"}],
                "jsonBody": {"query": "{ actor { nrql(query: \"SELECT rate FROM T WHERE app = '{{args.app}}'\") } }"},
                "jsonPath": "{$.data.actor.account.nrql.results[0].rate}"
            }}
        }]
    }))
    .expect("template");
    let app = r#"shop" OR 1=1 --"#;
    let spec = vigil::analysis::instantiate::instantiate(
        &[("newrelic".to_owned(), template)],
        &[vigil::api::Argument {
            name: "app".to_owned(),
            value: Some(app.to_owned()),
            value_from: None,
        }],
    )
    .expect("instantiate");
    let measured = measure_web(
        &client(&spec.metrics[0], &NoSecrets).expect("client"),
        &spec.metrics[0],
        at(),
    )
    .await;
    assert_eq!(
        measured.record.phase,
        AnalysisPhase::Successful,
        "{measured:?}"
    );
    let request = &server.stats.heads()[0];
    assert!(request.starts_with("POST /graphql HTTP/1.1"), "{request}");
    let lower = request.to_ascii_lowercase();
    assert!(
        lower.contains("content-type: application/json"),
        "{request}"
    );
    assert!(lower.contains("api-key: literal-key"), "{request}");
    assert!(
        lower.contains(&format!("x-app: {}", app.to_ascii_lowercase())),
        "{request}"
    );
    let body = request
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or_default();
    let sent: serde_json::Value = serde_json::from_str(body).expect("the body is JSON");
    assert_eq!(
        sent,
        json!({"query": format!("{{ actor {{ nrql(query: \"SELECT rate FROM T WHERE app = '{app}'\") }} }}")})
    );

    // A text body: the argument is JSON-escaped, so it stays inside its string.
    let text = metric(
        &server.url,
        "/text",
        json!({"successCondition": "true", "web": {"method": "PUT", "body": "{\"q\": \"x\\\" , \\\"admin\\\": true\"}"}}),
    );
    measure(&text).await;
    let request = &server.stats.heads()[1];
    assert!(request.starts_with("PUT /text HTTP/1.1"), "{request}");
    assert!(
        request.ends_with(r#"{"q": "x\" , \"admin\": true"}"#),
        "{request}"
    );
}

#[tokio::test]
async fn an_argument_cannot_change_the_host_and_is_percent_encoded_in_the_path_and_query() {
    support::install_crypto_provider();
    let server = answering("1").await;
    let template = |url: String| -> vigil::api::AnalysisTemplateSpec {
        serde_json::from_value(json!({
            "args": [{"name": "target"}],
            "metrics": [{"name": "m", "successCondition": "result == 1",
                         "provider": {"web": {"url": url}}}]
        }))
        .expect("template")
    };
    let given = |value: &str| {
        vec![vigil::api::Argument {
            name: "target".to_owned(),
            value: Some(value.to_owned()),
            value_from: None,
        }]
    };
    let error = vigil::analysis::instantiate::instantiate(
        &[(
            "t".to_owned(),
            template("http://{{args.target}}/x".to_owned()),
        )],
        &given(server.url.authority()),
    )
    .expect_err("an argument in the host");
    assert!(
        error.to_string().contains("scheme, host or port"),
        "{error}"
    );
    let problems = vigil::analysis::template::validate_template(&template(
        "http://{{args.target}}/x".to_owned(),
    ));
    assert!(
        problems
            .iter()
            .any(|p| p.path == "spec.metrics[0].provider.web.url"),
        "{problems:?}"
    );

    let spec = vigil::analysis::instantiate::instantiate(
        &[(
            "t".to_owned(),
            template(format!(
                "{}v1/{{{{args.target}}}}?q={{{{args.target}}}}",
                server.url
            )),
        )],
        &given("@evil.example/../x?admin=1#"),
    )
    .expect("instantiate");
    let measured = measure(&spec.metrics[0]).await;
    assert_eq!(
        measured.record.phase,
        AnalysisPhase::Successful,
        "{measured:?}"
    );
    let request = &server.stats.heads()[0];
    assert!(
        request.starts_with(
            "GET /v1/%40evil.example%2F..%2Fx%3Fadmin%3D1%23?q=%40evil.example%2F..%2Fx%3Fadmin%3D1%23 HTTP/1.1"
        ),
        "{request}"
    );
}

/// The controller's Secret reader holding one Secret `datadog` (`api-key`, `token`) whose
/// values may go to `origin` only.
fn secrets_for(origin: &Url) -> PrefetchedSecrets {
    let mut secrets = PrefetchedSecrets::new(Vec::new(), Vec::new());
    for (key, value) in [("api-key", "dd-key-123"), ("token", "tok-456")] {
        secrets.insert(
            "datadog",
            key,
            Ok(SecretValue {
                bytes: value.as_bytes().to_vec(),
                origins: Ok(vec![Origin::of(origin).expect("origin")]),
            }),
        );
    }
    secrets
}

fn secret_header_metric(url: &Url) -> Metric {
    metric(
        url,
        "/api/v1/query",
        json!({"successCondition": "result < 1", "web": {
            "jsonPath": "$.value",
            "auth": {"headers": [{"name": "DD-API-KEY",
                "valueFrom": {"secretKeyRef": {"name": "datadog", "key": "api-key"}}}]}
        }}),
    )
}

#[tokio::test]
async fn a_secret_header_goes_only_to_an_origin_its_secret_lists() {
    support::install_crypto_provider();
    let listed = answering(r#"{"value": 0.5}"#).await;
    let other = answering(r#"{"value": 0.5}"#).await;
    let secrets = secrets_for(&listed.url);

    let metric = secret_header_metric(&listed.url);
    let measured = measure_web(&client(&metric, &secrets).expect("client"), &metric, at()).await;
    assert_eq!(
        measured.record.phase,
        AnalysisPhase::Successful,
        "{measured:?}"
    );
    let request = listed.stats.heads()[0].to_ascii_lowercase();
    assert!(request.contains("dd-api-key: dd-key-123"), "{request}");

    let error = client(&secret_header_metric(&other.url), &secrets).expect_err("not listed");
    assert!(
        error.starts_with("provider.web.auth.headers[0]:") && error.contains("may not be sent to"),
        "{error}"
    );
    assert!(!error.contains("dd-key-123"), "{error}");
    assert_eq!(other.stats.requests(), 0);
}

#[tokio::test]
async fn a_secret_argument_in_a_header_is_sent_but_never_stored() {
    support::install_crypto_provider();
    // The server echoes what it was sent into its error, as careless APIs do.
    let server = FakeServer::start(|_| Reply::new(401, "bad token: Bearer tok-456")).await;
    let spec: AnalysisRunSpec = serde_json::from_value(json!({
        "args": [{"name": "token", "valueFrom": {"secretKeyRef": {"name": "datadog", "key": "token"}}}],
        "metrics": [{"name": "m", "successCondition": "result < 1",
            "provider": {"web": {"url": server.url.join("/q").expect("url").to_string(),
                "headers": [{"key": "Authorization", "value": "Bearer {{args.token}}"}]}}}]
    }))
    .expect("spec");
    let secrets = secrets_for(&server.url);
    let prepared = driver::prepare(&spec, &CommandLinePrometheus::None, &secrets).expect("prepare");
    let clients = driver::clients_for(
        &prepared.spec,
        &CommandLinePrometheus::None,
        &secrets,
        &ConcurrencyLimiter::default(),
    )
    .expect("clients");
    assert!(matches!(clients[0], MetricClient::Web(_)));
    let advanced = driver::advance(
        &prepared.spec,
        &Default::default(),
        &clients,
        &vigil::analysis::job::NoJobs,
        at(),
        MeasureAt::Now(at()),
        10,
    )
    .await
    .expect("advance");
    let request = server.stats.heads()[0].to_ascii_lowercase();
    assert!(
        request.contains("authorization: bearer tok-456"),
        "{request}"
    );
    let stored =
        serde_json::to_string(&prepared.redactor.redact_status(&advanced.status)).expect("json");
    assert!(!stored.contains("tok-456"), "{stored}");
    assert!(stored.contains("bad token: Bearer <redacted>"), "{stored}");

    // Listed nowhere else: the same run against another server reads no Secret at all.
    let other = answering("0").await;
    let mut elsewhere = spec.clone();
    if let Some(web) = elsewhere.metrics[0].provider.web.as_mut() {
        web.url = other.url.join("/q").expect("url").to_string();
    }
    let error = driver::prepare(&elsewhere, &CommandLinePrometheus::None, &secrets)
        .expect_err("origin not listed");
    assert!(error.to_string().starts_with("args[token]:"), "{error}");
    assert_eq!(other.stats.requests(), 0);
}

#[tokio::test]
async fn insecure_skips_certificate_verification_and_is_off_by_default() {
    support::install_crypto_provider();
    let server = FakeServer::start_tls(
        |_| Reply::new(200, "1"),
        support::fake_http::test_tls_acceptor(),
    )
    .await;
    let verified = metric(&server.url, "/", json!({"successCondition": "result == 1"}));
    let reason = error_reason(&verified).await;
    assert!(reason.starts_with("cannot reach"), "{reason}");
    let insecure = metric(
        &server.url,
        "/",
        json!({"successCondition": "result == 1", "web": {"insecure": true}}),
    );
    assert_eq!(
        measure(&insecure).await.record.phase,
        AnalysisPhase::Successful
    );
}

/// A shipped example template, its `url` pointed at `server` instead of the service.
fn example(name: &str, service: &str, server: &FakeServer) -> vigil::api::AnalysisTemplateSpec {
    let path = format!(
        "{}/analysis-templates/examples/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).expect("example");
    let local = server.url.as_str().trim_end_matches('/');
    let template: vigil::api::AnalysisTemplate =
        serde_norway::from_str(&text.replace(service, local)).expect("an AnalysisTemplate");
    template.spec
}

/// Runs one measurement of every metric of `template` with `args`, the Secrets in `secrets`.
async fn run_once(
    template: vigil::api::AnalysisTemplateSpec,
    args: &[(&str, &str)],
    secrets: &PrefetchedSecrets,
) -> vigil::api::AnalysisRunStatus {
    support::install_crypto_provider();
    let given: Vec<vigil::api::Argument> = args
        .iter()
        .map(|(name, value)| vigil::api::Argument {
            name: (*name).to_owned(),
            value: Some((*value).to_owned()),
            value_from: None,
        })
        .collect();
    let spec =
        vigil::analysis::instantiate::instantiate(&[("example".to_owned(), template)], &given)
            .expect("instantiate");
    let clients = driver::clients_for(
        &spec,
        &CommandLinePrometheus::None,
        secrets,
        &ConcurrencyLimiter::default(),
    )
    .expect("clients");
    driver::advance(
        &spec,
        &Default::default(),
        &clients,
        &vigil::analysis::job::NoJobs,
        at(),
        MeasureAt::Now(at()),
        10,
    )
    .await
    .expect("advance")
    .status
}

fn secret(name: &str, key: &str, value: &str, origin: &Url) -> PrefetchedSecrets {
    let mut secrets = PrefetchedSecrets::new(Vec::new(), Vec::new());
    secrets.insert(
        name,
        key,
        Ok(SecretValue {
            bytes: value.as_bytes().to_vec(),
            origins: Ok(vec![Origin::of(origin).expect("origin")]),
        }),
    );
    secrets
}

#[tokio::test]
async fn the_datadog_example_reads_the_last_point_of_a_datadog_answer_for_the_measurement_window() {
    let server = answering(
        r#"{"status": "ok", "res_type": "time_series", "series": [{"metric": "errors/hits",
            "pointlist": [[1767225600000.0, 0.002], [1767225660000.0, 0.03]]}]}"#,
    )
    .await;
    let template = example(
        "datadog-error-rate.yaml",
        "https://api.datadoghq.com",
        &server,
    );
    let mut secrets = secret("datadog", "api-key", "dd-api", &server.url);
    secrets.insert(
        "datadog",
        "app-key",
        Ok(SecretValue {
            bytes: b"dd-app".to_vec(),
            origins: Ok(vec![Origin::of(&server.url).expect("origin")]),
        }),
    );
    let status = run_once(template, &[("service", "checkout")], &secrets).await;
    let measurement = &status.metric_results[0].measurements[0];
    assert_eq!(measurement.phase, AnalysisPhase::Failed, "{status:?}");
    assert_eq!(measurement.value.as_deref(), Some("0.03"));
    let request = &server.stats.heads()[0];
    let now = at().as_second();
    assert!(
        request.starts_with(&format!(
            "GET /api/v1/query?from={}&to={now}&query=sum:trace.http.request.errors{{service:checkout}}",
            now - 300
        )),
        "{request}"
    );
    let lower = request.to_ascii_lowercase();
    assert!(
        lower.contains("dd-api-key: dd-api") && lower.contains("dd-application-key: dd-app"),
        "{request}"
    );
}

#[tokio::test]
async fn the_new_relic_example_posts_nrql_as_a_graphql_variable() {
    let server = answering(
        r#"{"data": {"actor": {"account": {"nrql": {"results": [{"errorPercent": 0.4}]}}}}}"#,
    )
    .await;
    let template = example(
        "newrelic-error-rate.yaml",
        "https://api.newrelic.com",
        &server,
    );
    let secrets = secret("newrelic", "api-key", "NRAK-test", &server.url);
    let status = run_once(
        template,
        &[("account-id", "12345"), ("app-name", "shop's canary")],
        &secrets,
    )
    .await;
    let measurement = &status.metric_results[0].measurements[0];
    assert_eq!(measurement.phase, AnalysisPhase::Successful, "{status:?}");
    let request = &server.stats.heads()[0];
    assert!(request.starts_with("POST /graphql HTTP/1.1"), "{request}");
    assert!(
        request.to_ascii_lowercase().contains("api-key: nrak-test"),
        "{request}"
    );
    let body = request
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or_default();
    let sent: serde_json::Value = serde_json::from_str(body).expect("JSON body");
    assert!(
        sent["query"]
            .as_str()
            .is_some_and(|q| q.contains("account(id: 12345)")),
        "{sent}"
    );
    assert!(
        sent["variables"]["nrql"]
            .as_str()
            .is_some_and(|q| q.contains("appName = 'shop's canary'")),
        "{sent}"
    );
}

#[tokio::test]
async fn a_metadata_address_is_refused_before_any_connection() {
    support::install_crypto_provider();
    for url in [
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "http://[fd00:ec2::254]/latest/api/token",
        "http://100.100.100.200/latest/meta-data/",
    ] {
        let config = WebClientConfig::new(url.to_owned());
        let error = WebClient::new(config, &ConcurrencyLimiter::default()).expect_err(url);
        assert!(
            matches!(
                error,
                ProviderError::RefuseDestination(EgressError::RefuseDestination { .. })
            ),
            "{url}: {error}"
        );
        assert!(
            error.to_string().contains("--allow-link-local-egress"),
            "{error}"
        );
    }
    // The operator's opt-out lets the client be built.
    let allowed = ConcurrencyLimiter::default().with_egress(EgressGuard::allowing_link_local());
    let config = WebClientConfig::new("http://169.254.169.254/".to_owned());
    assert!(WebClient::new(config, &allowed).is_ok());
}

#[tokio::test]
async fn a_name_resolving_to_a_refused_address_is_refused_with_no_request_sent() {
    support::install_crypto_provider();
    let server = answering("1").await;
    let port = server.url.port().expect("port");
    // The test's fake listens on loopback: the guard refuses loopback here, as it refuses
    // metadata addresses in production, so `localhost` is refused once it resolves.
    let limiter =
        ConcurrencyLimiter::default().with_egress(EgressGuard::default().refusing_loopback());
    let config = WebClientConfig::new(format!("http://localhost:{port}/check"));
    let client = WebClient::new(config, &limiter).expect("a name is checked once resolved");
    let error = client.fetch(at()).await.expect_err("refused");
    assert!(
        matches!(error, ProviderError::RefuseDestination(_)),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .contains("refused to connect to localhost"),
        "{error}"
    );
    assert_eq!(server.stats.requests(), 0, "no request reached the server");
    // The same server, guarded by the default: reached.
    let config = WebClientConfig::new(format!("http://localhost:{port}/check"));
    let client = WebClient::new(config, &ConcurrencyLimiter::default()).expect("client");
    assert_eq!(client.fetch(at()).await.expect("reached"), json!(1));
}

#[tokio::test]
async fn an_echoed_auth_secret_is_redacted_from_the_stored_status() {
    support::install_crypto_provider();
    // A template writer points the Secret's origin at an endpoint that echoes the key.
    let server = FakeServer::start(|_| Reply::new(403, "invalid key 'dd-key-123'")).await;
    let spec: AnalysisRunSpec = serde_json::from_value(json!({
        "metrics": [{"name": "m", "successCondition": "result < 1",
            "provider": {"web": {"url": server.url.join("/api/v1/validate").expect("url").to_string(),
                "auth": {"headers": [{"name": "DD-API-KEY",
                    "valueFrom": {"secretKeyRef": {"name": "datadog", "key": "api-key"}}}]}}}}]
    }))
    .expect("spec");
    let secrets = secrets_for(&server.url);
    let prepared = driver::prepare(&spec, &CommandLinePrometheus::None, &secrets).expect("prepare");
    let clients = driver::clients_for(
        &prepared.spec,
        &CommandLinePrometheus::None,
        &secrets,
        &ConcurrencyLimiter::default(),
    )
    .expect("clients");
    let redactor = driver::redactor_with_credentials(&prepared.redactor, &clients);
    let advanced = driver::advance(
        &prepared.spec,
        &Default::default(),
        &clients,
        &vigil::analysis::job::NoJobs,
        at(),
        MeasureAt::Now(at()),
        10,
    )
    .await
    .expect("advance");
    let unredacted = serde_json::to_string(&advanced.status).expect("json");
    assert!(
        unredacted.contains("dd-key-123"),
        "the server echoed it: {unredacted}"
    );
    let stored = serde_json::to_string(&redactor.redact_status(&advanced.status)).expect("json");
    assert!(!stored.contains("dd-key-123"), "{stored}");
    assert!(stored.contains("invalid key '<redacted>'"), "{stored}");
}

#[tokio::test]
async fn framing_headers_and_insecure_secret_credentials_are_refused() {
    let server = answering("1").await;
    for header in ["Host", "content-length", "Transfer-Encoding", "Connection"] {
        let metric = metric(
            &server.url,
            "/",
            json!({"successCondition": "result == 1",
                "web": {"headers": [{"key": header, "value": "x"}]}}),
        );
        let error = client(&metric, &NoSecrets).expect_err(header);
        assert!(
            error.contains("provider.web.headers") && error.contains("may not be set"),
            "{error}"
        );
    }
    let mut insecure = secret_header_metric(&server.url);
    if let Some(web) = insecure.provider.web.as_mut() {
        web.insecure = true;
    }
    let error = client(&insecure, &secrets_for(&server.url)).expect_err("insecure secret");
    assert!(error.starts_with("provider.web.insecure:"), "{error}");
    assert_eq!(server.stats.requests(), 0);
}

#[tokio::test]
async fn a_url_whose_origin_changes_with_the_time_is_refused_at_request_time() {
    support::install_crypto_provider();
    // `{{time.unix}}` in the host: at the epoch `http://0/` (0.0.0.0), at measurement time
    // another address. Validation refuses such a URL; the client refuses it anyway.
    let config = WebClientConfig::new("http://{{time.unix}}/x".to_owned());
    let client = WebClient::new(config, &ConcurrencyLimiter::default()).expect("client");
    let error = client.fetch(at()).await.expect_err("origin changed");
    assert!(
        error
            .to_string()
            .contains("no longer reaches http://0.0.0.0:80"),
        "{error}"
    );
}

/// Collects every log line written while it is the default subscriber.
#[derive(Clone, Default)]
struct CapturedLogs(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

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
async fn a_secret_argument_in_the_url_path_never_reaches_the_log_when_the_server_hangs() {
    support::install_crypto_provider();
    let logs = CapturedLogs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(move || writer.clone())
        .finish();
    // This test's runtime is single-threaded: the request is made on this thread.
    let _guard = tracing::subscriber::set_default(subscriber);
    let server = FakeServer::start(|_| Reply::new(200, "1").delay(Duration::from_secs(30))).await;
    let mut config = WebClientConfig::new(
        server
            .url
            .join("/v1/s3cr3t-in-path/check?key=s3cr3t-in-query")
            .expect("url")
            .to_string(),
    );
    config.timeout = Duration::from_secs(1);
    let client = WebClient::new(config, &ConcurrencyLimiter::default()).expect("client");
    let error = client.fetch(at()).await.expect_err("times out");
    assert!(matches!(error, ProviderError::Timeout { .. }), "{error}");
    let logged = String::from_utf8_lossy(&logs.0.lock().expect("logs")).into_owned();
    assert!(
        logged.contains("web metric request timed out"),
        "the timeout is logged: {logged}"
    );
    let origin = server.url.origin().ascii_serialization();
    assert!(logged.contains(&origin), "the origin is logged: {logged}");
    assert!(
        !logged.contains("s3cr3t"),
        "the log leaks the path: {logged}"
    );
    assert!(!format!("{client:?}").contains("s3cr3t"), "{client:?}");
}

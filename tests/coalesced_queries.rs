//! Coalesced queries: N AnalysisRuns of the same template measuring at the same tick cost one
//! Prometheus request per distinct (query, time) pair, and never share an answer across
//! credentials. A server on 127.0.0.1 counts the requests.

mod support;

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde_json::json;
use url::Url;
use vigil::analysis::driver::{self, MeasureAt};
use vigil::analysis::provider::prometheus::{
    ConcurrencyLimiter, PrometheusClient, PrometheusClientConfig,
};
use vigil::analysis::provider::resolve::{CommandLinePrometheus, NoSecrets};
use vigil::api::{AnalysisPhase, AnalysisRunSpec, AnalysisRunStatus};
use vigil::metrics::Metrics;

use support::fake_http::{FakeServer, Reply};

const RUNS: usize = 25;

/// The spec every run of one template gets: two metrics, two queries, every 30 s.
fn run_of_one_template(address: &Url) -> AnalysisRunSpec {
    serde_json::from_value(json!({
        "metrics": [
            {"name": "errors", "interval": "30s", "count": 3, "successCondition": "result < 1",
             "provider": {"prometheus": {"address": address.as_str(),
                 "query": "sum(rate(http_requests_total{code=~\"5..\"}[1m]))"}}},
            {"name": "latency", "interval": "30s", "count": 3, "successCondition": "result < 1",
             "provider": {"prometheus": {"address": address.as_str(),
                 "query": "histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket[1m])))"}}}
        ]
    }))
    .expect("spec")
}

/// A server answering every query with one sample of 0 after `delay` (so calls overlap).
async fn slow_prometheus(delay: Duration) -> FakeServer {
    FakeServer::start(move |_| Reply::ok_vector("0").delay(delay)).await
}

fn tick(second: i64, millis: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + second)
        .and_then(|t| t.checked_add(SignedDuration::from_millis(millis)))
        .expect("in range")
}

/// Advances every run at `now + i ms` (the same tick, as reconciles a few ms apart see it),
/// all at once.
async fn advance_all(
    spec: &AnalysisRunSpec,
    statuses: &mut [AnalysisRunStatus],
    limiter: &ConcurrencyLimiter,
    second: i64,
) {
    let clients = driver::clients_for(spec, &CommandLinePrometheus::None, &NoSecrets, limiter)
        .expect("clients");
    let advances = statuses.iter().enumerate().map(|(i, status)| {
        let now = tick(second, i as i64 * 7 % 1000);
        let clients = clients.clone();
        async move {
            driver::advance(
                spec,
                status,
                &clients,
                &vigil::analysis::job::NoJobs,
                now,
                MeasureAt::Now(now),
                10,
            )
            .await
            .expect("advance")
        }
    });
    let advanced = futures::future::join_all(advances).await;
    for (status, advanced) in statuses.iter_mut().zip(advanced) {
        assert_eq!(advanced.measured, 2, "both metrics measured");
        *status = advanced.status;
    }
}

#[tokio::test]
async fn runs_of_one_template_at_one_tick_cost_one_request_per_distinct_query_and_time() {
    support::install_crypto_provider();
    let prometheus = slow_prometheus(Duration::from_millis(300)).await;
    let metrics = Metrics::default();
    let limiter = ConcurrencyLimiter::new(8).with_metrics(metrics.prometheus_queries.clone());
    let spec = run_of_one_template(&prometheus.url);
    let mut statuses = vec![AnalysisRunStatus::default(); RUNS];

    advance_all(&spec, &mut statuses, &limiter, 0).await;
    assert_eq!(
        prometheus.stats.requests(),
        2,
        "{RUNS} runs x 2 queries at one tick: one request per query"
    );
    // The next tick is another time: one request per query again.
    advance_all(&spec, &mut statuses, &limiter, 30).await;
    assert_eq!(prometheus.stats.requests(), 4);
    for status in &statuses {
        for result in &status.metric_results {
            assert_eq!(result.count, 2);
            assert_eq!(result.successful, 2, "every run judged the shared answer");
        }
        assert_eq!(status.phase, Some(AnalysisPhase::Running));
    }
    // Every shared request asked for its first caller's time: run 0's, on the tick's second
    // (the others, a few ms later, shared it).
    for head in prometheus.stats.heads() {
        assert!(
            head.contains("time=2027-01-15T08%3A00%3A00Z")
                || head.contains("time=2027-01-15T08%3A00%3A30Z"),
            "{head}"
        );
    }
    let text = metrics.encode();
    let origin = format!(
        "origin=\"{}\"",
        prometheus.url.origin().ascii_serialization()
    );
    for expected in [
        format!("vigil_prometheus_queries_total{{{origin}}} {}", RUNS * 4),
        format!("vigil_prometheus_requests_total{{{origin}}} 4"),
        format!(
            "vigil_prometheus_coalesced_queries_total{{{origin}}} {}",
            RUNS * 4 - 4
        ),
        format!("vigil_prometheus_query_errors_total{{{origin}}} 0"),
        format!("vigil_prometheus_requests_in_flight{{{origin}}} 0"),
    ] {
        assert!(text.contains(&expected), "{expected} in\n{text}");
    }
    assert_eq!(limiter.coalescer().in_flight_keys(), 0);
}

fn client_with_token(address: &Url, token: &str, limiter: &ConcurrencyLimiter) -> PrometheusClient {
    let mut config = PrometheusClientConfig::new(address.clone());
    config.auth.bearer_token = Some(token.to_owned());
    PrometheusClient::new(config, limiter).expect("client")
}

#[tokio::test]
async fn calls_with_different_credentials_never_share_an_answer() {
    support::install_crypto_provider();
    let prometheus = slow_prometheus(Duration::from_millis(300)).await;
    let limiter = ConcurrencyLimiter::new(8);
    let at = tick(0, 0);
    let tenants = ["tenant-a", "tenant-b", "tenant-a", "tenant-b", "tenant-c"];
    let calls = tenants.iter().map(|token| {
        let client = client_with_token(&prometheus.url, token, &limiter);
        async move { client.query("up", at).await.expect("answer") }
    });
    futures::future::join_all(calls).await;
    assert_eq!(prometheus.stats.requests(), 3, "one request per credential");
    let mut tokens: Vec<String> = prometheus
        .stats
        .heads()
        .iter()
        .filter_map(|head| {
            head.lines()
                .find(|l| l.to_ascii_lowercase().starts_with("authorization:"))
                .map(|l| l.to_owned())
        })
        .collect();
    tokens.sort();
    assert_eq!(
        tokens,
        [
            "authorization: Bearer tenant-a",
            "authorization: Bearer tenant-b",
            "authorization: Bearer tenant-c"
        ]
    );
}

#[tokio::test]
async fn an_error_is_shared_as_the_same_typed_error_and_counted_per_caller() {
    support::install_crypto_provider();
    let prometheus = FakeServer::start(|_| {
        Reply::new(
            422,
            r#"{"status":"error","errorType":"execution","error":"boom"}"#,
        )
        .delay(Duration::from_millis(300))
    })
    .await;
    let metrics = Metrics::default();
    let limiter = ConcurrencyLimiter::new(8).with_metrics(metrics.prometheus_queries.clone());
    let client = PrometheusClient::new(
        PrometheusClientConfig::new(prometheus.url.clone()),
        &limiter,
    )
    .expect("client");
    let at = tick(0, 0);
    let answers = futures::future::join_all((0..5).map(|_| client.query("up", at))).await;
    assert_eq!(prometheus.stats.requests(), 1);
    for answer in answers {
        let error = answer.expect_err("the server's error");
        assert_eq!(error.to_string(), "Prometheus error execution: boom");
    }
    let origin = format!(
        "origin=\"{}\"",
        prometheus.url.origin().ascii_serialization()
    );
    let text = metrics.encode();
    assert!(
        text.contains(&format!(
            "vigil_prometheus_query_errors_total{{{origin}}} 5"
        )),
        "{text}"
    );
}

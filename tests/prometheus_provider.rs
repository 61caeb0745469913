//! The Prometheus provider against a real Prometheus (query semantics) and against a
//! misbehaving TCP server (network faults).

mod support;

use std::time::{Duration, Instant};

use jiff::Timestamp;
use url::Url;
use vigil::analysis::provider::budget::{
    ANSWER_BYTES_BUDGET, answer_bytes_held, answer_bytes_high_water,
};
use vigil::analysis::provider::prometheus::{
    BasicAuth, ConcurrencyLimiter, MAX_BODY_BYTES, MAX_LABEL_VALUE_BYTES, MAX_POINTS_PER_SERIES,
    MAX_SERIES_PER_ANSWER, PrometheusClient, PrometheusClientConfig, ResolvedAuth,
};
use vigil::analysis::provider::{
    AnswerCap, MAX_TEXT_BYTES, Measurement, MetricsProvider, ProviderError, QueryRange, ResultType,
    SingleValue,
};

use support::fake_http::{FakeServer, Reply};
use support::prometheus::{Fixture, PrometheusServer, T_END};

/// Half an hour before the end of the data: well inside it, so rates are exact.
const AT: i64 = T_END - 1800;

fn at(seconds: i64) -> Timestamp {
    Timestamp::from_second(seconds).expect("valid time")
}

/// Stable serves 100 req/s, all 200; canary 95 req/s 200 and 5 req/s 500 (error ratio 0.05).
/// Latency: stable p95 0.25 s, canary p95 0.75 s.
fn standard_fixture() -> Fixture {
    let stable = [
        ("rollout", "checkout"),
        ("revision", "abc"),
        ("role", "stable"),
    ];
    let canary = [
        ("rollout", "checkout"),
        ("revision", "def"),
        ("role", "canary"),
    ];
    let with_code = |labels: &[(&'static str, &'static str)], code: &'static str| {
        let mut l = labels.to_vec();
        l.push(("code", code));
        l
    };
    Fixture::default()
        .counter("http_requests", &with_code(&stable, "200"), 100.0)
        .counter("http_requests", &with_code(&canary, "200"), 95.0)
        .counter("http_requests", &with_code(&canary, "500"), 5.0)
        .histogram(
            "http_request_duration_seconds",
            &stable,
            &[(0.1, 50.0), (0.25, 95.0), (0.5, 99.0), (1.0, 100.0)],
            100.0,
            12.0,
        )
        .histogram(
            "http_request_duration_seconds",
            &canary,
            &[(0.1, 20.0), (0.25, 60.0), (0.5, 90.0), (1.0, 100.0)],
            100.0,
            30.0,
        )
}

fn config(address: &Url) -> PrometheusClientConfig {
    let mut config = PrometheusClientConfig::new(address.clone());
    config.timeout = Duration::from_secs(10);
    config.backoff_base = Duration::from_millis(20);
    config.backoff_max = Duration::from_millis(100);
    config
}

fn new_client(config: PrometheusClientConfig) -> PrometheusClient {
    support::install_crypto_provider();
    PrometheusClient::new(config, &ConcurrencyLimiter::default()).expect("valid client config")
}

fn real() -> (PrometheusServer, PrometheusClient) {
    let server = standard_fixture().start();
    let client = new_client(config(server.url()));
    (server, client)
}

fn finite(m: &Measurement) -> f64 {
    match m.single_value() {
        Ok(SingleValue::Finite { value, .. }) => value,
        other => panic!("expected one finite value, got {other:?} from {m:?}"),
    }
}

// ---------------------------------------------------------------- real Prometheus semantics

#[tokio::test]
async fn scalar_and_single_series_vector_are_exact() {
    let (_prometheus, client) = real();

    let scalar = client
        .query(
            r#"scalar(sum(rate(http_requests_total{role="canary",code="500"}[5m])))"#,
            at(AT),
        )
        .await
        .expect("scalar query");
    assert!(
        matches!(scalar, Measurement::Scalar { value, at: t } if value == 5.0 && t == at(AT)),
        "{scalar:?}"
    );

    let ratio = client
        .query(
            r#"sum(rate(http_requests_total{role="canary",code="500"}[5m]))
               / sum(rate(http_requests_total{role="canary"}[5m]))"#,
            at(AT),
        )
        .await
        .expect("ratio query");
    assert_eq!(finite(&ratio), 0.05);

    let p95 = client
        .query(
            r#"histogram_quantile(0.95, sum by (role, le) (rate(http_request_duration_seconds_bucket{role="canary"}[5m])))"#,
            at(AT),
        )
        .await
        .expect("p95 query");
    match p95.single_value() {
        Ok(SingleValue::Finite { value, labels, .. }) => {
            assert!((value - 0.75).abs() < 1e-12, "p95 {value}");
            assert_eq!(labels.get("role").map(String::as_str), Some("canary"));
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn several_series_where_one_was_expected_names_them() {
    let (_prometheus, client) = real();
    let m = client
        .query("sum by (role) (rate(http_requests_total[5m]))", at(AT))
        .await
        .expect("query");
    let Measurement::Vector(samples) = &m else {
        panic!("expected a vector, got {m:?}");
    };
    let mut by_role: Vec<(String, f64)> = samples
        .iter()
        .map(|s| (s.labels["role"].clone(), s.value))
        .collect();
    by_role.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        by_role,
        vec![("canary".to_owned(), 100.0), ("stable".to_owned(), 100.0)]
    );

    let err = m.single_value().expect_err("two series are not one value");
    match &err {
        ProviderError::TooManySeries {
            expected: 1,
            got: 2,
            series,
        } => {
            let mut series = series.clone();
            series.sort();
            assert_eq!(series, ["{role=\"canary\"}", "{role=\"stable\"}"]);
        }
        other => panic!("unexpected {other:?}"),
    }
    let message = err.to_string();
    assert!(
        message.contains("role=\"canary\"") && message.contains("role=\"stable\""),
        "{message}"
    );
}

#[tokio::test]
async fn empty_vector_is_no_data_and_nan_inf_keep_their_class() {
    let (_prometheus, client) = real();

    let empty = client
        .query(r#"http_requests_total{role="nonexistent"}"#, at(AT))
        .await
        .expect("query");
    assert_eq!(
        empty,
        Measurement::NoData {
            result_type: ResultType::Vector
        }
    );
    assert_eq!(empty.single_value().ok(), Some(SingleValue::NoData));

    // Explicit time matters: a day after the data there is nothing to see.
    let after = client
        .query("http_requests_total", at(T_END + 86_400))
        .await
        .expect("query");
    assert_eq!(after.single_value().ok(), Some(SingleValue::NoData));

    for (query, expected) in [
        ("0/0", "NaN"),
        ("1/0", "+Inf"),
        ("-1/0", "-Inf"),
        // A vector NaN, as a ratio over a window without traffic gives.
        (
            r#"sum(rate(http_requests_total{role="canary",code="500"}[5m])) * 0 / 0"#,
            "NaN",
        ),
    ] {
        let m = client.query(query, at(AT)).await.expect(query);
        let got = match m.single_value() {
            Ok(SingleValue::NaN { .. }) => "NaN",
            Ok(SingleValue::PosInf { .. }) => "+Inf",
            Ok(SingleValue::NegInf { .. }) => "-Inf",
            other => panic!("{query}: unexpected {other:?}"),
        };
        assert_eq!(got, expected, "{query}");
    }
}

#[tokio::test]
async fn query_range_gives_exact_matrix() {
    let (_prometheus, client) = real();
    let range = QueryRange {
        start: at(T_END - 3600),
        end: at(T_END - 1800),
        step: Duration::from_secs(600),
    };
    // Through the trait, as the analysis engine calls it.
    let m = MetricsProvider::query_range(
        &client,
        "sum by (role, code) (rate(http_requests_total[5m]))",
        range,
    )
    .await
    .expect("range query");
    let Measurement::Matrix(series) = &m else {
        panic!("expected a matrix, got {m:?}");
    };
    type Points = Vec<(i64, f64)>;
    let mut got: Vec<(String, String, Points)> = series
        .iter()
        .map(|s| {
            (
                s.labels["role"].clone(),
                s.labels["code"].clone(),
                s.points.iter().map(|(t, v)| (t.as_second(), *v)).collect(),
            )
        })
        .collect();
    got.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    let times = [T_END - 3600, T_END - 3000, T_END - 2400, T_END - 1800];
    let expect = |rate: f64| times.iter().map(|t| (*t, rate)).collect::<Vec<_>>();
    assert_eq!(
        got,
        vec![
            ("canary".into(), "200".into(), expect(95.0)),
            ("canary".into(), "500".into(), expect(5.0)),
            ("stable".into(), "200".into(), expect(100.0)),
        ]
    );
    assert!(matches!(
        m.single_series(),
        Err(ProviderError::TooManySeries { got: 3, .. })
    ));

    let p95 = client
        .query_range(
            r#"histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket{role="stable"}[5m])))"#,
            range,
        )
        .await
        .expect("p95 range");
    let one = p95.single_series().expect("one series").expect("some data");
    assert_eq!(one.points.len(), 4);
    for (_, v) in &one.points {
        assert!((v - 0.25).abs() < 1e-12, "stable p95 {v}");
    }
}

/// A canary's first sample lands between two seconds; the first measurement comes 400 ms
/// later. Its query must be evaluated at the time it asked for: a time floored to the
/// coalescing bucket's start falls before the sample and finds no series ("no data" on the
/// first measurement right after a canary starts, as the controller's end-to-end tests saw).
#[tokio::test]
async fn a_query_just_after_a_series_first_sample_finds_it_whatever_the_bucket() {
    support::install_crypto_provider();
    let first = (AT as f64) + 0.5;
    let prometheus = Fixture::new(AT - 60, AT + 60, 15)
        .gauge_samples(
            "canary_error_ratio",
            &[("role", "canary")],
            [(first, 0.01), (first + 1.0, 0.01), (first + 2.0, 0.01)],
        )
        .start();
    let just_after = Timestamp::from_millisecond(AT * 1000 + 900).expect("valid time");
    for bucket in [Duration::from_secs(1), Duration::from_secs(10)] {
        let limiter = ConcurrencyLimiter::default().with_coalesce_bucket(bucket);
        let client =
            PrometheusClient::new(config(prometheus.url()), &limiter).expect("valid config");
        let answer = client
            .query("max(last_over_time(canary_error_ratio[30s]))", just_after)
            .await
            .expect("query");
        assert_eq!(finite(&answer), 0.01, "bucket {bucket:?}: {answer:?}");
    }
}

#[tokio::test]
async fn syntax_error_is_prometheus_bad_data() {
    let (_prometheus, client) = real();
    let err = client
        .query("sum(rate(http_requests_total[5m])", at(AT))
        .await
        .expect_err("invalid PromQL");
    match err {
        ProviderError::PrometheusError { error_type, error } => {
            assert_eq!(error_type, "bad_data");
            assert!(error.contains("parse error"), "{error}");
        }
        other => panic!("unexpected {other:?}"),
    }
}

// ---------------------------------------------------------------- network faults

#[tokio::test]
async fn prometheus_down_is_unreachable_after_retries() {
    // A port that was just free: connection refused.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    let url = Url::parse(&format!("http://127.0.0.1:{port}/")).expect("url");
    let client = new_client(config(&url));
    let err = client
        .query("up", at(AT))
        .await
        .expect_err("nobody listens");
    // The message says why, not just "error sending request".
    let message = err.to_string();
    assert!(message.contains("onnection refused"), "{message}");
    match err {
        ProviderError::Unreachable {
            address, attempts, ..
        } => {
            assert_eq!(attempts, 3);
            assert_eq!(address, url.as_str());
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn dropped_connection_is_retried() {
    let fake = FakeServer::start(|n| {
        if n == 0 {
            Reply::hang_up()
        } else {
            Reply::ok_vector("0.125")
        }
    })
    .await;
    let client = new_client(config(&fake.url));
    let m = client
        .query("up", at(AT))
        .await
        .expect("second attempt works");
    assert_eq!(finite(&m), 0.125);
    assert_eq!(fake.stats.requests(), 2);

    // Always hanging up ends as Unreachable once the attempts are spent.
    let fake = FakeServer::start(|_| Reply::hang_up()).await;
    let err = new_client(config(&fake.url))
        .query("up", at(AT))
        .await
        .expect_err("never answers");
    assert!(
        matches!(err, ProviderError::Unreachable { attempts: 3, .. }),
        "{err:?}"
    );
    assert_eq!(fake.stats.requests(), 3);
}

#[tokio::test]
async fn slow_past_the_timeout_is_timeout() {
    let fake = FakeServer::start(|_| Reply::ok_vector("1").delay(Duration::from_secs(5))).await;
    let mut cfg = config(&fake.url);
    cfg.timeout = Duration::from_millis(300);
    let client = new_client(cfg);
    let started = Instant::now();
    let err = client.query("up", at(AT)).await.expect_err("too slow");
    let elapsed = started.elapsed();
    assert!(
        matches!(err, ProviderError::Timeout { after, attempts: 1 } if after == Duration::from_millis(300)),
        "{err:?}"
    );
    assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
    assert_eq!(fake.stats.requests(), 1);
}

#[tokio::test]
async fn server_error_is_retried_then_reported() {
    let fake = FakeServer::start(|_| Reply::new(500, "upstream exploded")).await;
    let client = new_client(config(&fake.url));
    let err = client.query("up", at(AT)).await.expect_err("always 500");
    match err {
        ProviderError::HttpStatus {
            status,
            body_excerpt,
            attempts,
        } => {
            assert_eq!((status, attempts), (500, 3));
            assert_eq!(body_excerpt, "upstream exploded");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(fake.stats.requests(), 3);
}

#[tokio::test]
async fn transient_503_recovers() {
    let fake = FakeServer::start(|n| {
        if n == 0 {
            Reply::new(503, "warming up")
        } else {
            Reply::ok_vector("0.5")
        }
    })
    .await;
    let client = new_client(config(&fake.url));
    let m = client
        .query("up", at(AT))
        .await
        .expect("second attempt works");
    assert_eq!(finite(&m), 0.5);
    assert_eq!(fake.stats.requests(), 2);
}

#[tokio::test]
async fn too_many_requests_honours_retry_after_seconds() {
    let fake = FakeServer::start(|n| {
        if n == 0 {
            Reply::new(429, "slow down").header("Retry-After", "1")
        } else {
            Reply::ok_vector("0.25")
        }
    })
    .await;
    let client = new_client(config(&fake.url));
    let started = Instant::now();
    let m = client.query("up", at(AT)).await.expect("recovers");
    let elapsed = started.elapsed();
    assert_eq!(finite(&m), 0.25);
    assert_eq!(fake.stats.requests(), 2);
    // The backoff ceiling is 100 ms: only Retry-After explains a 1 s wait.
    assert!(elapsed >= Duration::from_secs(1), "waited only {elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "waited {elapsed:?}");
}

#[tokio::test]
async fn too_many_requests_honours_retry_after_http_date() {
    // HTTP dates have 1 s resolution: +2 s means a wait in (1, 2] s.
    let fake = FakeServer::start(|n| {
        if n == 0 {
            let when = Timestamp::now() + jiff::SignedDuration::from_secs(2);
            let date = jiff::fmt::rfc2822::DateTimePrinter::new()
                .timestamp_to_rfc9110_string(&when)
                .expect("printable date");
            Reply::new(429, "slow down").header("Retry-After", &date)
        } else {
            Reply::ok_vector("0.25")
        }
    })
    .await;
    let client = new_client(config(&fake.url));
    let started = Instant::now();
    client.query("up", at(AT)).await.expect("recovers");
    let elapsed = started.elapsed();
    assert_eq!(fake.stats.requests(), 2);
    assert!(
        elapsed >= Duration::from_millis(900),
        "waited only {elapsed:?}"
    );
}

#[tokio::test]
async fn retry_after_beyond_the_timeout_gives_up_at_once() {
    let fake = FakeServer::start(|_| {
        Reply::new(429, "come back in an hour").header("Retry-After", "3600")
    })
    .await;
    // A long timeout: a client that slept on Retry-After (capped at the timeout) would take a
    // minute; one that gives up at once answers in a moment, however busy the machine.
    let mut cfg = config(&fake.url);
    cfg.timeout = Duration::from_secs(60);
    let client = new_client(cfg);
    let started = Instant::now();
    let err = client.query("up", at(AT)).await.expect_err("rate limited");
    assert!(
        matches!(
            err,
            ProviderError::HttpStatus {
                status: 429,
                attempts: 1,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "waited {:?}: slept on a Retry-After beyond the timeout",
        started.elapsed()
    );
    assert_eq!(fake.stats.requests(), 1);
}

#[tokio::test]
async fn malformed_json_is_malformed_body_and_not_retried() {
    let fake = FakeServer::start(|_| Reply::new(200, r#"{"status":"success","data":"#)).await;
    let client = new_client(config(&fake.url));
    let err = client.query("up", at(AT)).await.expect_err("garbage");
    assert!(
        matches!(err, ProviderError::MalformedBody { .. }),
        "{err:?}"
    );
    assert_eq!(fake.stats.requests(), 1);
}

#[tokio::test]
async fn error_body_is_prometheus_error() {
    let fake = FakeServer::start(|_| {
        Reply::new(
            422,
            r#"{"status":"error","errorType":"execution","error":"query processing would load too many samples into memory"}"#,
        )
    })
    .await;
    let client = new_client(config(&fake.url));
    let err = client
        .query("up", at(AT))
        .await
        .expect_err("execution error");
    match err {
        ProviderError::PrometheusError { error_type, error } => {
            assert_eq!(error_type, "execution");
            assert!(error.contains("too many samples"), "{error}");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(fake.stats.requests(), 1);
}

#[tokio::test]
async fn clients_of_one_limiter_share_an_http_client_but_send_only_their_own_credentials() {
    support::install_crypto_provider();
    let fake = FakeServer::start(|_| Reply::ok_vector("1")).await;
    let limiter = ConcurrencyLimiter::default();
    let tenant = |token: &str, orgs: &[&str]| {
        let mut cfg = config(&fake.url);
        cfg.auth = ResolvedAuth {
            bearer_token: Some(token.into()),
            headers: orgs
                .iter()
                .map(|org| ("X-Scope-OrgID".to_owned(), (*org).to_owned()))
                .collect(),
            ..ResolvedAuth::default()
        };
        PrometheusClient::new(cfg, &limiter).expect("valid client config")
    };
    // A name given twice sends its last value only, as before clients were shared.
    let (a, b) = (
        tenant("tok-a", &["tenant-a"]),
        tenant("tok-b", &["tenant-a-typo", "tenant-b"]),
    );
    let plain = PrometheusClient::new(config(&fake.url), &limiter).expect("valid client config");
    assert_eq!(limiter.clients().len(), 1, "one HTTP client for all three");
    // Distinct queries: identical ones with the same credentials would be coalesced.
    a.query("up_a", at(AT)).await.expect("tenant a");
    b.query("up_b", at(AT)).await.expect("tenant b");
    plain
        .query("up_plain", at(AT))
        .await
        .expect("no credentials");
    let heads: Vec<String> = fake
        .stats
        .heads()
        .iter()
        .map(|h| h.to_ascii_lowercase())
        .collect();
    let sent = |query: &str| {
        heads
            .iter()
            .find(|h| h.contains(&format!("query={query}&")))
            .cloned()
            .unwrap_or_else(|| panic!("no request for {query}: {heads:?}"))
    };
    let (head_a, head_b, head_plain) = (sent("up_a"), sent("up_b"), sent("up_plain"));
    assert!(head_a.contains("authorization: bearer tok-a"), "{head_a}");
    assert!(head_a.contains("x-scope-orgid: tenant-a"), "{head_a}");
    assert!(
        !head_a.contains("tenant-b") && !head_a.contains("tok-b"),
        "{head_a}"
    );
    assert!(head_b.contains("authorization: bearer tok-b"), "{head_b}");
    assert!(head_b.contains("x-scope-orgid: tenant-b"), "{head_b}");
    assert!(
        !head_b.contains("tenant-a") && !head_b.contains("tok-a"),
        "{head_b}"
    );
    assert!(
        !head_plain.contains("authorization") && !head_plain.contains("x-scope-orgid"),
        "{head_plain}"
    );
}

#[tokio::test]
async fn auth_and_headers_are_sent_and_401_is_not_retried() {
    let fake = FakeServer::start(|_| Reply::new(401, "who are you")).await;
    let mut cfg = config(&fake.url);
    cfg.auth = ResolvedAuth {
        bearer_token: Some("tok-123".into()),
        headers: vec![("X-Scope-OrgID".into(), "tenant-a".into())],
        ..ResolvedAuth::default()
    };
    let client = new_client(cfg);
    let err = client.query("up", at(AT)).await.expect_err("unauthorized");
    assert!(
        matches!(
            err,
            ProviderError::HttpStatus {
                status: 401,
                attempts: 1,
                ..
            }
        ),
        "{err:?}"
    );
    let heads = fake.stats.heads();
    assert_eq!(heads.len(), 1);
    let head = heads[0].to_ascii_lowercase();
    assert!(head.contains("authorization: bearer tok-123"), "{head}");
    assert!(head.contains("x-scope-orgid: tenant-a"), "{head}");
    assert!(
        head.starts_with("get /api/v1/query?query=up&time="),
        "{head}"
    );

    let fake = FakeServer::start(|_| Reply::ok_vector("1")).await;
    let mut cfg = config(&fake.url.join("prefix/").expect("url"));
    cfg.auth.basic = Some(BasicAuth {
        username: "vigil".into(),
        password: "pw".into(),
    });
    new_client(cfg).query("up", at(AT)).await.expect("ok");
    let head = fake.stats.heads()[0].to_ascii_lowercase();
    // base64("vigil:pw")
    assert!(head.contains("authorization: basic dmlnaww6chc="), "{head}");
    assert!(head.starts_with("get /prefix/api/v1/query?"), "{head}");
}

#[test]
fn invalid_configs_are_rejected() {
    support::install_crypto_provider();
    let url = Url::parse("http://127.0.0.1:9/").expect("url");
    let limiter = ConcurrencyLimiter::default();
    let mut cfg = PrometheusClientConfig::new(url.clone());
    cfg.auth.ca_bundle_pem = Some(b"not a certificate".to_vec());
    assert!(matches!(
        PrometheusClient::new(cfg, &limiter),
        Err(ProviderError::InvalidConfig { .. })
    ));
    let mut cfg = PrometheusClientConfig::new(url.clone());
    cfg.auth.bearer_token = Some("a".into());
    cfg.auth.basic = Some(BasicAuth {
        username: "u".into(),
        password: "p".into(),
    });
    assert!(matches!(
        PrometheusClient::new(cfg, &limiter),
        Err(ProviderError::InvalidConfig { .. })
    ));
    let mut cfg = PrometheusClientConfig::new(url);
    cfg.auth.headers = vec![("bad header".into(), "secret-value".into())];
    match PrometheusClient::new(cfg, &limiter) {
        Err(e @ ProviderError::InvalidConfig { .. }) => {
            assert!(!e.to_string().contains("secret-value"), "{e}");
        }
        other => panic!("unexpected {other:?}"),
    }
}

// ---------------------------------------------------------------- concurrency limit

async fn burst(clients: &[PrometheusClient], per_client: usize) {
    // Distinct queries: identical ones in flight would share one request.
    let texts: Vec<String> = (0..clients.len() * per_client)
        .map(|i| format!("up{{i=\"{i}\"}}"))
        .collect();
    let queries = clients
        .iter()
        .flat_map(|c| (0..per_client).map(move |j| (c, j)))
        .zip(&texts)
        .map(|((c, _), text)| c.query(text, at(AT)));
    for result in futures::future::join_all(queries).await {
        result.expect("query succeeds");
    }
}

#[tokio::test]
async fn concurrency_is_limited_per_server() {
    support::install_crypto_provider();
    let slow = || Reply::ok_vector("1").delay(Duration::from_millis(200));

    // Two clients of the same server share the limit of 2.
    let fake = FakeServer::start(move |_| slow()).await;
    let limiter = ConcurrencyLimiter::new(2);
    let clients: Vec<_> = (0..2)
        .map(|_| PrometheusClient::new(config(&fake.url), &limiter).expect("client"))
        .collect();
    burst(&clients, 3).await;
    assert_eq!(fake.stats.requests(), 6);
    assert_eq!(fake.stats.max_in_flight(), 2);

    // Control: with a generous limit the same burst is fully concurrent, so the assertion
    // above measures the limiter and not the server.
    let fake = FakeServer::start(move |_| slow()).await;
    let limiter = ConcurrencyLimiter::new(16);
    let clients: Vec<_> = (0..2)
        .map(|_| PrometheusClient::new(config(&fake.url), &limiter).expect("client"))
        .collect();
    burst(&clients, 3).await;
    assert_eq!(fake.stats.max_in_flight(), 6);
}

// ---------------------------------------------------------------- TLS

#[tokio::test]
async fn https_with_ca_bundle() {
    support::install_crypto_provider();
    use support::fake_http::{test_ca_pem, test_tls_acceptor};
    let fake = FakeServer::start_tls(|_| Reply::ok_vector("0.5"), test_tls_acceptor()).await;
    assert_eq!(fake.url.scheme(), "https");

    let mut cfg = config(&fake.url);
    cfg.auth.ca_bundle_pem = Some(test_ca_pem());
    let m = new_client(cfg)
        .query("up", at(AT))
        .await
        .expect("trusted CA");
    assert_eq!(finite(&m), 0.5);
    assert_eq!(fake.stats.requests(), 1);

    // Without the bundle the test CA is unknown: the handshake fails, no request is served.
    let mut cfg = config(&fake.url);
    cfg.max_attempts = 1;
    let err = new_client(cfg)
        .query("up", at(AT))
        .await
        .expect_err("untrusted");
    assert!(matches!(err, ProviderError::Unreachable { .. }), "{err:?}");
    assert_eq!(fake.stats.requests(), 1);
}

// ---------------------------------------------------------------- harness

#[tokio::test]
async fn prometheus_starts_with_a_scrape_config() {
    let prometheus = PrometheusServer::start_with_config(
        "global: {scrape_interval: 1s}\nscrape_configs:\n  - job_name: nothing\n    static_configs: [{targets: ['127.0.0.1:9']}]\n",
    );
    let client = new_client(config(prometheus.url()));
    let m = client.query("vector(42)", at(AT)).await.expect("query");
    assert_eq!(finite(&m), 42.0);
}

// ---------------------------------------------------------------- hostile answers (issue 9)

#[tokio::test]
async fn redirect_to_another_listener_is_not_followed_and_the_secret_header_stays_home() {
    // The listener a hostile Prometheus redirects to records whether it was reached.
    let elsewhere = FakeServer::start(|_| Reply::ok_vector("1")).await;
    let target = format!("{}api/v1/query?query=up", elsewhere.url);
    let origin = FakeServer::start(move |_| Reply::new(302, "").header("Location", &target)).await;
    let mut cfg = config(&origin.url);
    cfg.auth = ResolvedAuth {
        headers: vec![("X-Api-Key".into(), "secret-marker-4711".into())],
        ..ResolvedAuth::default()
    };
    let client = new_client(cfg);
    let err = client
        .query("up", at(AT))
        .await
        .expect_err("redirect refused");
    match &err {
        ProviderError::Redirected { status, location } => {
            assert_eq!(*status, 302);
            assert!(location.starts_with(elsewhere.url.as_str()), "{location}");
        }
        other => panic!("unexpected {other:?}"),
    }
    let text = err.to_string();
    assert!(text.contains("redirects are not followed"), "{text}");
    assert!(!text.contains("secret-marker-4711"), "{text}");
    assert_eq!(origin.stats.requests(), 1, "a redirect is not retried");
    assert_eq!(
        elsewhere.stats.requests(),
        0,
        "the other listener was reached"
    );
    assert!(
        elsewhere
            .stats
            .heads()
            .iter()
            .all(|head| !head.contains("secret-marker-4711"))
    );
}

#[tokio::test]
async fn huge_retry_after_does_not_panic() {
    // u64::MAX seconds overflowed `Instant` (a panic); the other is merely absurd.
    for retry_after in ["18446744073709551615", "99999999999999"] {
        let fake = FakeServer::start(move |_| {
            Reply::new(429, "slow down").header("Retry-After", retry_after)
        })
        .await;
        let mut cfg = config(&fake.url);
        cfg.timeout = Duration::from_secs(2);
        let client = new_client(cfg);
        let err = client
            .query("up", at(AT))
            .await
            .expect_err("rate limited past the deadline");
        assert!(
            matches!(
                err,
                ProviderError::HttpStatus {
                    status: 429,
                    attempts: 1,
                    ..
                }
            ),
            "{retry_after}: {err:?}"
        );
        assert_eq!(fake.stats.requests(), 1);
    }
}

#[test]
fn query_timeout_over_the_ceiling_is_refused_naming_the_field() {
    use vigil::api::duration::MAX_QUERY_TIMEOUT;
    support::install_crypto_provider();
    let url = Url::parse("http://127.0.0.1:9/").expect("url");
    let limiter = ConcurrencyLimiter::default();
    let mut cfg = PrometheusClientConfig::new(url.clone());
    cfg.timeout = Duration::from_secs(1_000_000 * 3600);
    match PrometheusClient::new(cfg, &limiter) {
        Err(e @ ProviderError::InvalidConfig { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains("provider.prometheus.timeout 1000000h is over the ceiling of 5m"),
                "{text}"
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    let mut cfg = PrometheusClientConfig::new(url);
    cfg.timeout = MAX_QUERY_TIMEOUT;
    assert!(PrometheusClient::new(cfg, &limiter).is_ok());
}

/// A vector answer with `n` one-label series, `bytes_per_label` bytes in the label value.
fn many_series_body(n: usize, label: &str) -> String {
    let mut body = String::from(r#"{"status":"success","data":{"resultType":"vector","result":["#);
    for i in 0..n {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&format!(
            r#"{{"metric":{{"pod":"{label}{i:06}"}},"value":[1700000000,"1"]}}"#
        ));
    }
    body.push_str("]}}");
    body
}

#[tokio::test]
async fn half_a_million_series_answer_is_refused_before_decoding() {
    // 25 MB: once decoded whole into 1.48 GB; now refused at the body cap, unread.
    let body = many_series_body(500_000, "");
    assert!(body.len() > 20 << 20, "{} bytes", body.len());
    let fake = FakeServer::start(move |_| Reply::new(200, body.clone())).await;
    let client = new_client(PrometheusClientConfig::new(fake.url.clone()));
    let err = client.query("up", at(AT)).await.expect_err("too large");
    assert!(
        matches!(err, ProviderError::BodyTooLarge { limit } if limit == MAX_BODY_BYTES),
        "{err:?}"
    );
    assert_eq!(
        fake.stats.requests(),
        1,
        "a body over the cap is not retried"
    );
}

#[tokio::test]
async fn twenty_thousand_series_answer_is_too_many_series_naming_the_limit() {
    // Under the body cap, over the series cap: decoding stops at the limit.
    let body = many_series_body(20_000, "");
    assert!(body.len() < MAX_BODY_BYTES);
    let fake = FakeServer::start(move |_| Reply::new(200, body.clone())).await;
    let client = new_client(config(&fake.url));
    let err = client
        .query("up", at(AT))
        .await
        .expect_err("too many series");
    match &err {
        ProviderError::TooManySeriesInAnswer { limit, got } => {
            assert_eq!((*limit, *got), (MAX_SERIES_PER_ANSWER, 20_000));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(
        err.to_string()
            .starts_with("too many series: the answer holds 20000, at most 10000 are decoded"),
        "{err}"
    );
}

fn threshold_metric(address: &Url) -> vigil::api::Metric {
    vigil::api::Metric {
        name: "errors".into(),
        provider: vigil::api::MetricProvider {
            prometheus: Some(vigil::api::PrometheusProvider {
                address: Some(address.to_string()),
                query: Some("up".into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        success_condition: Some("result < 1".into()),
        ..Default::default()
    }
}

/// Measures `metric` against `client` and records the verdict in a fresh run's status.
async fn measured_status(
    client: &PrometheusClient,
    metric: vigil::api::Metric,
) -> vigil::api::AnalysisRunStatus {
    use vigil::analysis::{measure, run};
    let spec = vigil::api::AnalysisRunSpec {
        metrics: vec![metric.clone()],
        ..Default::default()
    };
    let mut status = run::plan(&spec, &Default::default(), at(AT))
        .expect("plan")
        .status;
    let measured = measure::measure_threshold(client, &metric, at(AT)).await;
    run::record(
        &spec,
        &mut status,
        "errors",
        measured.record,
        false,
        10,
        at(AT),
    )
    .expect("record");
    status
}

fn assert_stored_texts_bounded(status: &vigil::api::AnalysisRunStatus) {
    let limit = MAX_TEXT_BYTES + 32;
    let result = &status.metric_results[0];
    let record = &result.measurements[0];
    for text in [
        &record.reason,
        &record.value,
        &result.message,
        &status.message,
    ] {
        let len = text.as_deref().map_or(0, str::len);
        assert!(len <= limit, "{len} bytes stored: {text:.200?}");
    }
    let json = serde_json::to_string(status).expect("status serializes");
    assert!(
        json.len() < 8 * MAX_TEXT_BYTES,
        "{} bytes of status",
        json.len()
    );
}

#[tokio::test]
async fn five_megabyte_error_body_is_stored_as_a_bounded_reason() {
    let body = format!(
        r#"{{"status":"error","errorType":"execution","error":"{}"}}"#,
        "boom ".repeat(1 << 20)
    );
    let fake = FakeServer::start(move |_| Reply::new(422, body.clone())).await;
    let client = new_client(config(&fake.url));
    let status = measured_status(&client, threshold_metric(&fake.url)).await;
    let record = &status.metric_results[0].measurements[0];
    let reason = record.reason.as_deref().unwrap_or_default();
    assert!(
        reason.starts_with("Prometheus error execution: boom boom"),
        "{reason:.200}"
    );
    assert!(reason.contains("bytes cut)"), "the cut is said");
    assert_stored_texts_bounded(&status);
}

#[tokio::test]
async fn megabyte_label_values_are_stored_bounded() {
    // A megabyte value is now refused at the label value cap; the longest value decoded is
    // still longer than a stored text may be, and is cut when stored.
    let huge = "v".repeat(MAX_LABEL_VALUE_BYTES - 6);
    assert!(huge.len() > MAX_TEXT_BYTES);
    let body = many_series_body(2, &huge);
    let fake = FakeServer::start(move |_| Reply::new(200, body.clone())).await;
    let client = new_client(config(&fake.url));
    let status = measured_status(&client, threshold_metric(&fake.url)).await;
    let record = &status.metric_results[0].measurements[0];
    assert!(
        record
            .reason
            .as_deref()
            .unwrap_or_default()
            .contains("expected 1 series, got 2"),
        "{:.300?}",
        record.reason
    );
    assert_stored_texts_bounded(&status);
}

#[tokio::test]
async fn run_with_interval_100000000h_ends_in_error_naming_the_field() {
    // Once a timestamp overflow (a panic) in the lifecycle; now the run ends at its start.
    use vigil::analysis::driver::{MeasureAt, advance};
    let fake = FakeServer::start(|_| Reply::ok_vector("0")).await;
    let mut metric = threshold_metric(&fake.url);
    metric.interval = Some("100000000h".into());
    let spec = vigil::api::AnalysisRunSpec {
        metrics: vec![metric],
        ..Default::default()
    };
    let clients = [vigil::analysis::driver::MetricClient::Prometheus(
        new_client(config(&fake.url)),
    )];
    let now = at(AT);
    let advanced = advance(
        &spec,
        &Default::default(),
        &clients,
        &vigil::analysis::job::NoJobs,
        now,
        MeasureAt::Now(now),
        10,
    )
    .await
    .expect("advance");
    assert_eq!(
        advanced.status.phase,
        Some(vigil::api::AnalysisPhase::Error)
    );
    let message = advanced.status.message.unwrap_or_default();
    assert!(
        message.contains("metrics[0] (errors).interval: 100000000h is over the ceiling of 720h"),
        "{message}"
    );
    assert_eq!((advanced.measured, advanced.next_at), (0, None));
    assert_eq!(fake.stats.requests(), 0);
}

#[tokio::test]
async fn million_point_matrix_answer_is_refused_at_the_points_per_series_cap() {
    // Review finding 2: one 8 MB series of a million points once cost 56 MiB to decode.
    let points = vec![r#"[1700000000,"1"]"#; 480_000].join(",");
    let body = format!(
        r#"{{"status":"success","data":{{"resultType":"matrix","result":[{{"metric":{{}},"values":[{points}]}}]}}}}"#
    );
    assert!(body.len() <= MAX_BODY_BYTES, "{} bytes", body.len());
    let fake = FakeServer::start(move |_| Reply::new(200, body.clone())).await;
    let client = new_client(config(&fake.url));
    let range = QueryRange {
        start: at(AT - 3600),
        end: at(AT),
        step: Duration::from_secs(1),
    };
    let err = client
        .query_range("up", range)
        .await
        .expect_err("over the points cap");
    assert!(
        matches!(
            err,
            ProviderError::AnswerOverCap { cap: AnswerCap::PointsPerSeries, limit }
                if limit == MAX_POINTS_PER_SERIES
        ),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with("the answer holds more than 11000 points in one series"),
        "{err}"
    );
    assert_eq!(fake.stats.requests(), 1, "a capped answer is not retried");
}

#[tokio::test]
async fn many_concurrent_big_answers_never_hold_more_than_the_answer_budget() {
    // Review finding 2: 50 metrics against 50 servers put 100-200 answers of 8 MiB in flight
    // at once. Here 16 answers of 6 MiB (96 MiB together, three times the budget) from four
    // servers, with room for all of them in the per-server limit.
    const ANSWER_BYTES: usize = 6 << 20;
    const QUERIES: usize = 16;
    const { assert!(QUERIES * ANSWER_BYTES > 2 * ANSWER_BYTES_BUDGET) };
    support::install_crypto_provider();
    // A valid empty vector padded with whitespace: cheap to parse, as big as we like.
    let head = r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
    let body = format!("{head}{}", " ".repeat(ANSWER_BYTES - head.len()));
    let mut servers = Vec::new();
    for _ in 0..4 {
        let body = body.clone();
        servers.push(
            FakeServer::start(move |_| {
                Reply::new(200, body.clone()).delay(Duration::from_millis(100))
            })
            .await,
        );
    }
    let limiter = ConcurrencyLimiter::new(QUERIES);
    let clients: Vec<PrometheusClient> = servers
        .iter()
        .map(|server| {
            let mut config = config(&server.url);
            config.timeout = Duration::from_secs(120);
            PrometheusClient::new(config, &limiter).expect("client")
        })
        .collect();
    // Distinct queries: identical ones in flight would share one request.
    let texts: Vec<String> = (0..QUERIES).map(|i| format!("up{{i=\"{i}\"}}")).collect();
    let queries = texts
        .iter()
        .enumerate()
        .map(|(i, text)| clients[i % clients.len()].query(text, at(AT)));
    for result in futures::future::join_all(queries).await {
        let measurement = result.expect("every query is answered, some after waiting");
        assert!(matches!(measurement, Measurement::NoData { .. }));
    }
    let served: usize = servers.iter().map(|s| s.stats.requests()).sum();
    assert_eq!(served, QUERIES);
    // The gauge counts bytes actually read into bodies, not reservations: without the budget
    // the bodies of all 16 answers are read at once.
    let high_water = answer_bytes_high_water();
    assert!(
        high_water <= ANSWER_BYTES_BUDGET,
        "{high_water} answer bytes were held at once, over the budget of {ANSWER_BYTES_BUDGET}"
    );
    assert!(high_water >= ANSWER_BYTES, "the gauge saw the answers");
    assert!(
        answer_bytes_held() < ANSWER_BYTES,
        "bodies are released after parsing"
    );
}

// ---------------------------------------------------------------- egress guard

/// A run of one metric querying `address` (none: the command line's default address).
fn run_querying(address: Option<&str>) -> vigil::api::AnalysisRunSpec {
    let mut provider = serde_json::json!({"query": "up"});
    if let Some(address) = address {
        provider["address"] = address.into();
    }
    serde_json::from_value(serde_json::json!({
        "metrics": [{"name": "meta", "successCondition": "result < 1",
                     "provider": {"prometheus": provider}}]
    }))
    .expect("spec")
}

#[test]
fn a_template_prometheus_address_at_a_metadata_server_is_refused_naming_the_field() {
    use vigil::analysis::driver::clients_for;
    use vigil::analysis::provider::resolve::{CommandLinePrometheus, NoSecrets};
    use vigil::http_client::EgressGuard;
    support::install_crypto_provider();
    let limiter = ConcurrencyLimiter::default();
    for address in [
        "http://169.254.169.254:9090/",
        "http://[fd00:ec2::254]/",
        "http://100.100.100.200/",
    ] {
        let error = clients_for(
            &run_querying(Some(address)),
            &CommandLinePrometheus::None,
            &NoSecrets,
            &limiter,
        )
        .expect_err(address)
        .to_string();
        for expected in [
            "metrics[0] (meta): provider.prometheus.address: refused to connect to",
            "--allow-link-local-egress",
        ] {
            assert!(error.contains(expected), "{address}: {error}");
        }
    }
    let metadata = Url::parse("http://169.254.169.254:9090/").expect("url");
    // The operator's own default, for a metric naming no address, is theirs to choose; a
    // metric's own address next to it is still checked.
    let operators = CommandLinePrometheus::Default(metadata.clone());
    assert!(clients_for(&run_querying(None), &operators, &NoSecrets, &limiter).is_ok());
    let elsewhere = Some("http://169.254.169.254:9091/");
    assert!(clients_for(&run_querying(elsewhere), &operators, &NoSecrets, &limiter).is_err());
    // So is the override of `vigil analyze --prometheus`, and the operator's opt-out.
    let user = CommandLinePrometheus::Override(metadata);
    assert!(clients_for(&run_querying(elsewhere), &user, &NoSecrets, &limiter).is_ok());
    let allowed = ConcurrencyLimiter::default().with_egress(EgressGuard::allowing_link_local());
    let none = CommandLinePrometheus::None;
    assert!(clients_for(&run_querying(elsewhere), &none, &NoSecrets, &allowed).is_ok());
}

#[tokio::test]
async fn a_prometheus_name_resolving_to_a_refused_address_is_refused_with_no_request_sent() {
    support::install_crypto_provider();
    let fake = FakeServer::start(|_| Reply::ok_vector("1")).await;
    let port = fake.url.port().expect("port");
    let address = Url::parse(&format!("http://localhost:{port}/")).expect("url");
    // The fake listens on loopback: this guard refuses loopback, as the default one refuses
    // metadata addresses, so `localhost` is refused once it resolves.
    let guard = vigil::http_client::EgressGuard::default().refusing_loopback();
    let limiter = ConcurrencyLimiter::default().with_egress(guard);
    let client = PrometheusClient::new(config(&address), &limiter).expect("a name passes");
    let error = client.query("up", at(AT)).await.expect_err("refused");
    assert!(
        matches!(error, ProviderError::RefuseDestination(_)),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .contains("refused to connect to localhost"),
        "{error}"
    );
    assert_eq!(fake.stats.requests(), 0, "no request reached the server");
    // The same server under the default guard: reached.
    let client = new_client(config(&address));
    assert_eq!(finite(&client.query("up", at(AT)).await.expect("ok")), 1.0);
}

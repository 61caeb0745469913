//! The notification outbox against real HTTP receivers on 127.0.0.1: delivery, retries,
//! give-ups, no redirects, dedupe, a full queue dropping with a count, a slow receiver never
//! holding `enqueue`.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use vigil::notify::{Delivery, Enqueued, NotificationMetrics, Outbox, OutboxSettings, SinkUrl};

use support::fake_http::{FakeServer, Reply};

/// Generous: CI is a busy machine.
const DEADLINE: Duration = Duration::from_secs(30);

fn fast_settings() -> OutboxSettings {
    OutboxSettings {
        backoff_base: Duration::from_millis(20),
        backoff_max: Duration::from_millis(100),
        timeout: Duration::from_secs(5),
        ..OutboxSettings::default()
    }
}

fn delivery(server: &FakeServer, sink: &str, key: &str) -> Delivery {
    Delivery {
        sink: sink.to_owned(),
        url: SinkUrl::new(server.url.join("hooks/T0/SECRET").expect("url")).expect("sink url"),
        body: json!({ "text": format!("hello {key}") }),
        dedupe_key: key.to_owned(),
    }
}

/// Waits until `done` holds, panicking with `what` after [`DEADLINE`].
async fn eventually(what: &str, done: impl Fn() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn start(settings: OutboxSettings) -> (Outbox, NotificationMetrics) {
    support::install_crypto_provider();
    let metrics = NotificationMetrics::default();
    let (outbox, _worker) = Outbox::start(settings, metrics.clone()).expect("outbox");
    (outbox, metrics)
}

#[tokio::test]
async fn a_delivery_arrives_as_a_json_post_and_is_counted_sent() {
    let server = FakeServer::start(|_| Reply::new(200, "ok")).await;
    let (outbox, metrics) = start(fast_settings());
    assert_eq!(
        outbox.enqueue(delivery(&server, "team", "k1")),
        Enqueued::Queued
    );
    eventually("sent", || {
        NotificationMetrics::value(&metrics.sent, "team") == 1
    })
    .await;
    let heads = server.stats.heads();
    assert!(heads[0].starts_with("POST /hooks/T0/SECRET "), "{heads:?}");
    assert!(
        heads[0]
            .to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{heads:?}"
    );
    let body: serde_json::Value =
        serde_json::from_str(&server.stats.bodies()[0]).expect("JSON body");
    assert_eq!(body, json!({ "text": "hello k1" }));
}

#[tokio::test]
async fn a_failing_receiver_is_retried_then_succeeds() {
    let server = FakeServer::start(|n| match n {
        0 => Reply::new(503, "busy"),
        1 => Reply::hang_up(),
        2 => Reply::new(429, "slow down"),
        _ => Reply::new(200, "ok"),
    })
    .await;
    let (outbox, metrics) = start(fast_settings());
    outbox.enqueue(delivery(&server, "team", "k1"));
    eventually("sent", || {
        NotificationMetrics::value(&metrics.sent, "team") == 1
    })
    .await;
    assert_eq!(server.stats.requests(), 4);
    assert_eq!(NotificationMetrics::value(&metrics.failed, "team"), 0);
}

#[tokio::test]
async fn retries_are_bounded_and_the_give_up_is_counted() {
    let server = FakeServer::start(|_| Reply::new(500, "down")).await;
    let settings = OutboxSettings {
        max_attempts: 3,
        ..fast_settings()
    };
    let (outbox, metrics) = start(settings);
    outbox.enqueue(delivery(&server, "team", "k1"));
    eventually("failed", || {
        NotificationMetrics::value(&metrics.failed, "team") == 1
    })
    .await;
    assert_eq!(server.stats.requests(), 3);
    assert_eq!(NotificationMetrics::value(&metrics.sent, "team"), 0);
}

#[tokio::test]
async fn a_client_error_or_a_redirect_is_not_retried_nor_followed() {
    let elsewhere = FakeServer::start(|_| Reply::new(200, "ok")).await;
    let target = elsewhere.url.to_string();
    let server = FakeServer::start(move |n| match n {
        0 => Reply::new(404, "no such hook"),
        _ => Reply::new(302, "").header("Location", &target),
    })
    .await;
    let (outbox, metrics) = start(fast_settings());
    outbox.enqueue(delivery(&server, "team", "k1"));
    outbox.enqueue(delivery(&server, "team", "k2"));
    eventually("failed", || {
        NotificationMetrics::value(&metrics.failed, "team") == 2
    })
    .await;
    assert_eq!(server.stats.requests(), 2);
    assert_eq!(elsewhere.stats.requests(), 0, "a redirect was followed");
}

#[tokio::test]
async fn the_same_sink_and_key_are_sent_once() {
    let server = FakeServer::start(|_| Reply::new(200, "ok")).await;
    let (outbox, metrics) = start(fast_settings());
    assert_eq!(
        outbox.enqueue(delivery(&server, "team", "k1")),
        Enqueued::Queued
    );
    assert_eq!(
        outbox.enqueue(delivery(&server, "team", "k1")),
        Enqueued::Duplicate
    );
    // Another sink with the same key is another message.
    assert_eq!(
        outbox.enqueue(delivery(&server, "ops", "k1")),
        Enqueued::Queued
    );
    eventually("both sent", || {
        NotificationMetrics::value(&metrics.sent, "team") == 1
            && NotificationMetrics::value(&metrics.sent, "ops") == 1
    })
    .await;
    assert_eq!(server.stats.requests(), 2);
}

/// On a current-thread runtime the worker cannot run while the test enqueues without
/// awaiting, so exactly `capacity` deliveries fit and the rest are dropped, each counted.
#[tokio::test(flavor = "current_thread")]
async fn a_full_queue_drops_and_counts_without_waiting() {
    let server = FakeServer::start(|_| Reply::new(200, "ok")).await;
    let settings = OutboxSettings {
        capacity: 3,
        ..fast_settings()
    };
    let (outbox, metrics) = start(settings);
    let results: Vec<Enqueued> = (0..10)
        .map(|i| outbox.enqueue(delivery(&server, "team", &format!("k{i}"))))
        .collect();
    let queued = results.iter().filter(|r| **r == Enqueued::Queued).count();
    let dropped = results.iter().filter(|r| **r == Enqueued::Dropped).count();
    assert_eq!((queued, dropped), (3, 7), "{results:?}");
    assert_eq!(NotificationMetrics::value(&metrics.dropped, "team"), 7);
    eventually("queued ones sent", || {
        NotificationMetrics::value(&metrics.sent, "team") == 3
    })
    .await;
    // A dropped key is not remembered: the same event may be queued again later.
    assert_eq!(
        outbox.enqueue(delivery(&server, "team", "k9")),
        Enqueued::Queued
    );
}

/// A receiver that never answers in time: the enqueues return at once, and the attempts end
/// at the timeout as failures.
#[tokio::test]
async fn a_slow_receiver_never_holds_enqueue() {
    let server =
        FakeServer::start(|_| Reply::new(200, "late").delay(Duration::from_secs(3600))).await;
    let settings = OutboxSettings {
        timeout: Duration::from_millis(300),
        max_attempts: 2,
        concurrency: 1,
        ..fast_settings()
    };
    let (outbox, metrics) = start(settings);
    for i in 0..50 {
        // Returns without awaiting anything: the receiver cannot hold it.
        outbox.enqueue(delivery(&server, "team", &format!("k{i}")));
    }
    eventually("first give-up", || {
        NotificationMetrics::value(&metrics.failed, "team") >= 1
    })
    .await;
    assert_eq!(NotificationMetrics::value(&metrics.sent, "team"), 0);
}

#[tokio::test]
async fn a_receiver_that_is_down_is_a_counted_failure() {
    // Bind and drop: a port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let (outbox, metrics) = start(OutboxSettings {
        max_attempts: 2,
        ..fast_settings()
    });
    outbox.enqueue(Delivery {
        sink: "team".into(),
        url: SinkUrl::parse(&format!("http://127.0.0.1:{port}/SECRET")).expect("url"),
        body: json!({}),
        dedupe_key: "k".into(),
    });
    eventually("failed", || {
        NotificationMetrics::value(&metrics.failed, "team") == 1
    })
    .await;
}

#[tokio::test]
async fn a_blackholed_sink_does_not_delay_another_sinks_delivery() {
    // Answers after ten minutes: longer than any attempt's timeout.
    let blackhole =
        FakeServer::start(|_| Reply::new(200, "late").delay(Duration::from_secs(600))).await;
    let healthy = FakeServer::start(|_| Reply::new(200, "ok")).await;
    let (outbox, metrics) = start(OutboxSettings {
        timeout: vigil::notify::outbox::MAX_TIMEOUT,
        ..OutboxSettings::default()
    });
    // More deliveries to the blackhole than the outbox has slots.
    for i in 0..(3 * vigil::notify::outbox::DEFAULT_CONCURRENCY) {
        assert_eq!(
            outbox.enqueue(delivery(&blackhole, "flooded", &format!("k{i}"))),
            Enqueued::Queued
        );
    }
    eventually("the blackhole holds its origin's slots", || {
        blackhole.stats.max_in_flight() == vigil::notify::outbox::DEFAULT_PER_ORIGIN
    })
    .await;
    assert_eq!(
        outbox.enqueue(delivery(&healthy, "team", "k")),
        Enqueued::Queued
    );
    // Well before the blackhole's first attempt times out (60 s).
    eventually("the other sink's delivery", || {
        NotificationMetrics::value(&metrics.sent, "team") == 1
    })
    .await;
    assert_eq!(
        blackhole.stats.max_in_flight(),
        vigil::notify::outbox::DEFAULT_PER_ORIGIN,
        "one origin never holds more than its slots"
    );
}

#[tokio::test]
async fn a_rate_limited_receiver_is_asked_again_after_its_retry_after() {
    let asked_at = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let server = FakeServer::start({
        let asked_at = asked_at.clone();
        move |n| {
            asked_at.lock().expect("lock").push(Instant::now());
            match n {
                0 => Reply::new(429, "slow down").header("Retry-After", "2"),
                _ => Reply::new(200, "ok"),
            }
        }
    })
    .await;
    // The backoff alone would retry after 20 ms.
    let (outbox, metrics) = start(fast_settings());
    outbox.enqueue(delivery(&server, "slack", "k"));
    eventually("sent after the wait", || {
        NotificationMetrics::value(&metrics.sent, "slack") == 1
    })
    .await;
    let asked_at = asked_at.lock().expect("lock").clone();
    assert_eq!(asked_at.len(), 2, "{asked_at:?}");
    assert!(
        asked_at[1].duration_since(asked_at[0]) >= Duration::from_millis(1900),
        "asked again before Retry-After: {:?}",
        asked_at[1].duration_since(asked_at[0])
    );
}

#[tokio::test]
async fn a_sink_at_a_refused_destination_is_never_contacted() {
    let server = FakeServer::start(|_| Reply::new(200, "ok")).await;
    // The receiver listens on loopback: refusing it stands for a metadata server.
    let (outbox, metrics) = start(OutboxSettings {
        egress: vigil::http_client::EgressGuard::default().refusing_loopback(),
        ..fast_settings()
    });
    outbox.enqueue(delivery(&server, "team", "k"));
    eventually("given up", || {
        NotificationMetrics::value(&metrics.failed, "team") == 1
    })
    .await;
    assert_eq!(server.stats.requests(), 0);
    assert_eq!(NotificationMetrics::value(&metrics.sent, "team"), 0);
}

#[tokio::test]
async fn a_blackholed_sink_cannot_fill_the_queue_for_everyone_else() {
    let blackhole =
        FakeServer::start(|_| Reply::new(200, "late").delay(Duration::from_secs(600))).await;
    let healthy = FakeServer::start(|_| Reply::new(200, "ok")).await;
    let (outbox, metrics) = start(OutboxSettings {
        capacity: 16,
        per_origin_queued: 4,
        timeout: vigil::notify::outbox::MAX_TIMEOUT,
        ..OutboxSettings::default()
    });
    let flood: Vec<Enqueued> = (0..16)
        .map(|i| outbox.enqueue(delivery(&blackhole, "flooded", &format!("k{i}"))))
        .collect();
    assert_eq!(
        flood.iter().filter(|e| **e == Enqueued::Queued).count(),
        4,
        "{flood:?}"
    );
    assert_eq!(NotificationMetrics::value(&metrics.dropped, "flooded"), 12);
    assert_eq!(
        outbox.enqueue(delivery(&healthy, "team", "k")),
        Enqueued::Queued
    );
    eventually("the other sink's delivery", || {
        NotificationMetrics::value(&metrics.sent, "team") == 1
    })
    .await;
}

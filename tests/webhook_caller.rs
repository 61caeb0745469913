//! The webhook caller against real HTTP servers on 127.0.0.1: answers are reported by key and
//! scope, a call in flight is never started twice, a failed answer is asked again only after
//! the retry interval, redirects are not followed, errors name the origin only, and
//! notifications go through notify's outbox: retried a bounded number of times, counted, and
//! delivered once per key.

/// Attempts per notification in these tests.
const ATTEMPTS: u32 = 3;

mod support;

use std::time::{Duration, Instant};

use support::fake_http::{FakeServer, Reply};
use support::webhook_receiver::{Answer, Receiver};
use vigil::notify::{NotificationMetrics, Outbox, OutboxSettings};
use vigil::platform::webhooks::{
    MAX_POLL_ENTRIES, MAX_POLLS_IN_FLIGHT_PER_NAMESPACE, WebhookCaller, WebhookCallerConfig,
};
use vigil::rollout::webhooks::{
    CallKind, WebhookAnswer, WebhookCall, WebhookOutcome, WebhookPayload,
};

const WAIT: Duration = Duration::from_secs(30);

fn call(key: &str, kind: CallKind, url: &str, timeout: Duration) -> WebhookCall {
    WebhookCall {
        key: key.into(),
        kind,
        name: "gate".into(),
        url: url.into(),
        timeout,
        payload: WebhookPayload {
            name: "shop".into(),
            type_: "confirm-promotion".into(),
            webhook: "gate".into(),
            ..Default::default()
        },
    }
}

fn caller(retry_after: Duration) -> WebhookCaller {
    caller_counting(retry_after, NotificationMetrics::default())
}

fn caller_counting(retry_after: Duration, metrics: NotificationMetrics) -> WebhookCaller {
    support::install_crypto_provider();
    let (outbox, _worker) = Outbox::start(
        OutboxSettings {
            max_attempts: ATTEMPTS,
            backoff_base: Duration::from_millis(50),
            ..OutboxSettings::default()
        },
        metrics,
    )
    .expect("outbox");
    WebhookCaller::new(WebhookCallerConfig {
        retry_after,
        outbox: Some(outbox),
        ..WebhookCallerConfig::default()
    })
}

/// Polls until `scope` has an answer for `key`.
async fn answer_for(caller: &WebhookCaller, scope: &str, key: &str) -> WebhookOutcome {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(WebhookAnswer { outcome, .. }) =
            caller.answers(scope).into_iter().find(|a| a.key == key)
        {
            return outcome;
        }
        assert!(Instant::now() < deadline, "no answer for {key}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn answers_are_kept_by_scope_and_key_and_a_call_in_flight_is_not_repeated() {
    let receiver = Receiver::start().await;
    receiver.answer("/ok", Answer::Status(204));
    receiver.answer("/hang", Answer::Hang);
    let caller = caller(Duration::from_millis(100));
    let calls = [
        call(
            "a",
            CallKind::Poll,
            &receiver.url("/ok"),
            Duration::from_secs(5),
        ),
        call(
            "b",
            CallKind::Poll,
            &receiver.url("/hang"),
            Duration::from_secs(30),
        ),
    ];
    caller.call("ns/shop", Some("ns"), &calls);
    assert_eq!(
        answer_for(&caller, "ns/shop", "a").await,
        WebhookOutcome::Answered { status: 204 }
    );
    assert!(
        caller.answers("ns/other").is_empty(),
        "another Rollout's answers"
    );
    let payload = &receiver.received("/ok")[0];
    assert_eq!(
        payload["namespace"], "ns",
        "the shell fills the namespace in"
    );
    assert_eq!(payload["name"], "shop");
    // Asked again and again while the first call hangs: still one request.
    for _ in 0..5 {
        caller.call("ns/shop", Some("ns"), &calls);
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert_eq!(receiver.received("/hang").len(), 1);
    assert_eq!(receiver.received("/ok").len(), 1, "a 2xx answer is kept");
    assert!(
        caller.answers("ns/shop").iter().all(|a| a.key != "b"),
        "no answer yet"
    );
    // A key no longer asked for is forgotten.
    caller.call("ns/shop", Some("ns"), &calls[1..]);
    assert!(caller.answers("ns/shop").iter().all(|a| a.key != "a"));
}

#[tokio::test]
async fn a_failed_answer_is_asked_again_only_after_the_retry_interval() {
    let receiver = Receiver::start().await;
    receiver.answer("/gate", Answer::Status(409));
    let caller = caller(Duration::from_secs(3600));
    let calls = [call(
        "k",
        CallKind::Poll,
        &receiver.url("/gate"),
        Duration::from_secs(5),
    )];
    caller.call("shop", None, &calls);
    assert_eq!(
        answer_for(&caller, "shop", "k").await,
        WebhookOutcome::Answered { status: 409 }
    );
    receiver.answer("/gate", Answer::Status(200));
    for _ in 0..5 {
        caller.call("shop", None, &calls);
    }
    assert_eq!(
        receiver.received("/gate").len(),
        1,
        "not before the interval"
    );

    receiver.answer("/gate", Answer::Status(409));
    let quick = self::caller(Duration::from_millis(50));
    quick.call("shop", None, &calls);
    eventually("the first answer", || !quick.answers("shop").is_empty()).await;
    let before = receiver.received("/gate").len();
    tokio::time::sleep(Duration::from_millis(100)).await;
    quick.call("shop", None, &calls);
    eventually("the retry", || receiver.received("/gate").len() > before).await;
    // A 2xx answer is final: not asked again.
    receiver.answer("/gate", Answer::Status(200));
    tokio::time::sleep(Duration::from_millis(100)).await;
    quick.call("shop", None, &calls);
    eventually("the passing answer", || {
        quick.answers("shop").iter().any(|a| a.outcome.passed())
    })
    .await;
    let asked = receiver.received("/gate").len();
    tokio::time::sleep(Duration::from_millis(100)).await;
    quick.call("shop", None, &calls);
    assert_eq!(receiver.received("/gate").len(), asked);
}

#[tokio::test]
async fn a_redirect_is_not_followed_and_errors_name_the_origin_only() {
    let target = Receiver::start().await;
    let location = target.url("/elsewhere");
    let redirect =
        FakeServer::start(move |_| Reply::new(302, "").header("location", &location)).await;
    let caller = caller(Duration::from_secs(3600));
    let redirecting = format!("{}gate?token=s3cr3t", redirect.url);
    let timing_out =
        FakeServer::start(|_| Reply::new(200, "").delay(Duration::from_secs(30))).await;
    let slow = format!("{}gate?token=s3cr3t", timing_out.url);
    let closed = format!(
        "http://127.0.0.1:{}/gate?token=s3cr3t",
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port")
    );
    caller.call(
        "shop",
        None,
        &[
            call(
                "redirect",
                CallKind::Poll,
                &redirecting,
                Duration::from_secs(5),
            ),
            call("slow", CallKind::Poll, &slow, Duration::from_millis(300)),
            call("down", CallKind::Poll, &closed, Duration::from_secs(5)),
        ],
    );
    assert_eq!(
        answer_for(&caller, "shop", "redirect").await,
        WebhookOutcome::Answered { status: 302 },
        "a redirect is an answer that is not 2xx"
    );
    assert!(target.received("/elsewhere").is_empty(), "not followed");
    for key in ["slow", "down"] {
        let outcome = answer_for(&caller, "shop", key).await;
        assert!(!outcome.passed(), "{key}: {outcome}");
        let text = outcome.to_string();
        assert!(text.contains("http://127.0.0.1:"), "{key}: {text}");
        assert!(
            !text.contains("s3cr3t") && !text.contains("/gate"),
            "{key}: {text}"
        );
    }
    let slow = answer_for(&caller, "shop", "slow").await.to_string();
    assert!(
        slow.contains("no answer from") && slow.contains("within 300ms"),
        "{slow}"
    );
}

#[tokio::test]
async fn a_notification_is_tried_a_bounded_number_of_times_counted_and_sent_once_per_key() {
    let receiver = Receiver::start().await;
    receiver.answer("/fails", Answer::Status(500));
    receiver.answer("/works", Answer::Status(200));
    let metrics = NotificationMetrics::default();
    let caller = caller_counting(Duration::from_secs(3600), metrics.clone());
    let notify = |key: &str, path: &str| {
        let mut call = call(
            key,
            CallKind::Notify,
            &receiver.url(path),
            Duration::from_secs(5),
        );
        call.payload.type_ = "event".into();
        call
    };
    let first = [notify("e1", "/fails"), notify("e2", "/works")];
    caller.call("shop", None, &first);
    eventually("every attempt", || {
        receiver.received("/fails").len() == ATTEMPTS as usize
    })
    .await;
    eventually("the delivery", || receiver.received("/works").len() == 1).await;
    assert!(
        caller.answers("shop").is_empty(),
        "notifications are not polls"
    );
    eventually("the failure counted", || {
        NotificationMetrics::value(&metrics.failed, "webhook-event") == 1
    })
    .await;
    assert_eq!(
        NotificationMetrics::value(&metrics.sent, "webhook-event"),
        1
    );
    // The same key again (a reconcile repeated after a conflict) is not sent again; a new
    // key is, after which the worker has provably handled the repeat.
    caller.call("shop", None, &[notify("e2", "/works")]);
    caller.call("shop", None, &[notify("e3", "/works")]);
    eventually("the next delivery", || {
        receiver.received("/works").len() >= 2
    })
    .await;
    eventually("the next delivery counted", || {
        NotificationMetrics::value(&metrics.sent, "webhook-event") == 2
    })
    .await;
    assert_eq!(receiver.received("/works").len(), 2, "e2 once, e3 once");
    assert_eq!(receiver.received("/fails").len(), ATTEMPTS as usize);
}

/// The poll calls of one Rollout with 20 hooks (the most allowed), all at `url`.
fn poll_calls(url: &str) -> Vec<WebhookCall> {
    (0..20)
        .map(|i| {
            call(
                &format!("gate{i}"),
                CallKind::Poll,
                url,
                Duration::from_secs(60),
            )
        })
        .collect()
}

#[tokio::test]
async fn one_namespace_over_its_poll_caps_does_not_defer_another_namespaces_poll() {
    let receiver = Receiver::start().await;
    receiver.answer("/hang", Answer::Hang);
    receiver.answer("/ok", Answer::Status(200));
    let caller = caller(Duration::from_secs(3600));
    // 500 Rollouts × 20 hooks in one namespace: as many polls as the whole controller keeps,
    // every receiver hanging.
    let crowded = poll_calls(&receiver.url("/hang"));
    let rollouts = MAX_POLL_ENTRIES / crowded.len();
    for i in 0..rollouts {
        caller.call(&format!("crowded/r{i}/uid"), Some("crowded"), &crowded);
    }
    let first = caller.answers("crowded/r0/uid");
    assert!(
        first.iter().any(|a| matches!(&a.outcome,
            WebhookOutcome::Failed { reason } if reason.contains("webhook polls in flight"))),
        "beyond the namespace's in-flight polls, the answer says why: {first:?}"
    );
    let last = caller.answers(&format!("crowded/r{}/uid", rollouts - 1));
    assert_eq!(last.len(), crowded.len(), "{last:?}");
    assert!(
        last.iter().all(|a| matches!(&a.outcome,
            WebhookOutcome::Failed { reason } if reason.contains("webhook polls kept"))),
        "beyond the namespace's entries, the answer says why: {last:?}"
    );
    eventually("the crowded namespace's polls reach the receiver", || {
        receiver.held() == MAX_POLLS_IN_FLIGHT_PER_NAMESPACE
    })
    .await;
    // Another namespace's gate is still asked, and answered.
    let calm = [call(
        "gate",
        CallKind::Poll,
        &receiver.url("/ok"),
        Duration::from_secs(5),
    )];
    caller.call("calm/shop/uid", Some("calm"), &calm);
    assert_eq!(
        answer_for(&caller, "calm/shop/uid", "gate").await,
        WebhookOutcome::Answered { status: 200 }
    );
    assert_eq!(receiver.held(), MAX_POLLS_IN_FLIGHT_PER_NAMESPACE);
}

#[tokio::test]
async fn a_poll_to_a_refused_destination_is_not_made_and_says_why() {
    support::install_crypto_provider();
    let receiver = Receiver::start().await;
    receiver.answer("/gate", Answer::Status(200));
    let (outbox, _worker) =
        Outbox::start(OutboxSettings::default(), NotificationMetrics::default()).expect("outbox");
    let caller = WebhookCaller::new(WebhookCallerConfig {
        retry_after: Duration::from_secs(3600),
        outbox: Some(outbox),
        // The test's receiver listens on loopback: refusing it stands for a metadata server.
        egress: vigil::http_client::EgressGuard::default().refusing_loopback(),
    });
    let calls = [call(
        "gate",
        CallKind::Poll,
        &receiver.url("/gate"),
        Duration::from_secs(5),
    )];
    caller.call("ns/shop/uid", Some("ns"), &calls);
    match answer_for(&caller, "ns/shop/uid", "gate").await {
        WebhookOutcome::Failed { reason } => {
            assert!(reason.contains("--allow-link-local-egress"), "{reason}")
        }
        other => panic!("a refused destination answered: {other:?}"),
    }
    assert!(receiver.received("/gate").is_empty());
    // The metadata address itself is refused by default, before any connection.
    let metadata = WebhookCaller::new(WebhookCallerConfig::default());
    metadata.call(
        "ns/shop/uid",
        Some("ns"),
        &[call(
            "gate",
            CallKind::Poll,
            "http://169.254.169.254/latest/meta-data/",
            Duration::from_secs(5),
        )],
    );
    match answer_for(&metadata, "ns/shop/uid", "gate").await {
        WebhookOutcome::Failed { reason } => assert!(reason.contains("169.254"), "{reason}"),
        other => panic!("the metadata server was asked: {other:?}"),
    }
}

//! Fair analysis across Prometheus servers, with the real AnalysisRun controller against the
//! in-process API server and Prometheus stand-ins on 127.0.0.1.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::analysis_controller;
use super::context::Context;
use super::fair_share::{AddressSlots, address_slot_cap};
use super::trust_tests::{FakePrometheus, RUNS, run_with};
use crate::analysis::provider::prometheus::ConcurrencyLimiter;
use crate::metrics::Metrics;
use crate::testing::apiserver::ApiServer;

fn in_namespace(mut run: Value, namespace: &str) -> Value {
    run["metadata"]["namespace"] = json!(namespace);
    run
}

/// Runs the AnalysisRun controller over every namespace until the returned sender is used.
fn start_controller(
    ctx: Arc<Context>,
    concurrency: u16,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let scope = super::WatchScope {
        namespace: None,
        selector: None,
        concurrency,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let controller = tokio::spawn(async move {
        analysis_controller::run(ctx, &scope, None, async {
            let _ = stopped.await;
        })
        .await;
    });
    (stop, controller)
}

#[tokio::test]
async fn runs_in_many_namespaces_stuck_on_a_silent_prometheus_do_not_starve_a_healthy_one() {
    const STUCK: usize = 8;
    let server = ApiServer::start();
    let silent = FakePrometheus::start(false).await;
    let healthy = FakePrometheus::start(true).await;
    let concurrency: u16 = 4;
    let mut ctx = Context::new(
        server.client(),
        Metrics::default(),
        ConcurrencyLimiter::default(),
        None,
    );
    ctx.address_slots = AddressSlots::new(address_slot_cap(usize::from(concurrency)));
    let ctx = Arc::new(ctx);
    // One stuck run per namespace: the per-namespace share alone lets them take every slot.
    for i in 0..STUCK {
        let mut run = run_with(
            &format!("stuck-{i}"),
            &silent.address,
            &format!("up{{run=\"{i}\"}}"),
            json!(null),
            json!([]),
        );
        // The ceiling (MAX_QUERY_TIMEOUT) is far above any wait of this test.
        run["spec"]["metrics"][0]["provider"]["prometheus"]["timeout"] = json!("5m");
        server
            .put_json(RUNS, in_namespace(run, &format!("tenant-{i}")))
            .expect("store");
    }
    let (stop, controller) = start_controller(ctx.clone(), concurrency);
    // Stuck runs fill the controller's slots and the silent server holds queries open before
    // the healthy run exists. Without the per-address share, four of them hold every slot.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while silent.requests().len() < 2 || ctx.metrics.reconciles.get() < u64::from(concurrency) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stuck runs were not all looked at: {} reconciles, {} queries in flight",
            ctx.metrics.reconciles.get(),
            silent.requests().len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server
        .put_json(
            RUNS,
            in_namespace(
                run_with("fair", &healthy.address, "up", json!(null), json!([])),
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
            "the healthy run was starved by runs stuck on another Prometheus: {fair:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        silent.requests().len() <= address_slot_cap(usize::from(concurrency)),
        "one Prometheus held more than its share: {} queries in flight",
        silent.requests().len()
    );
    let _ = stop.send(());
    controller.abort();
}

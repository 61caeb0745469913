//! The default Prometheus (`vigil controller --prometheus`): metrics without an address query
//! it, a metric's own address wins, and being the operator's default makes it no credential
//! origin of its own (`--credential-origin` and the Secrets' annotations still decide).

use std::sync::Arc;

use serde_json::{Value, json};

use super::context::Context;
use super::trust_tests::{
    FakePrometheus, NS, SECRETS, context, context_sending_files_to, phase_and_message,
    reconcile_stored, secret_for,
};
use crate::analysis::provider::resolve::CommandLinePrometheus;
use crate::testing::apiserver::ApiServer;

/// `ctx` with `address` as its `--prometheus`.
fn with_default(ctx: Arc<Context>, address: &str) -> Arc<Context> {
    let mut ctx = Arc::try_unwrap(ctx).unwrap_or_else(|_| panic!("the context is not shared yet"));
    ctx.prometheus =
        CommandLinePrometheus::Default(url::Url::parse(address).expect("default address"));
    Arc::new(ctx)
}

/// An AnalysisRun `name` with one metric measured once, naming no address.
fn run_without_address(name: &str, query: &str, auth: Value, args: Value) -> Value {
    json!({
        "apiVersion": "vigil.dev/v1alpha1", "kind": "AnalysisRun",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "args": args,
            "metrics": [{
                "name": "errors", "count": 1, "successCondition": "result < 1",
                "provider": {"prometheus": {"query": query, "timeout": "5s", "auth": auth}}
            }]
        }
    })
}

#[tokio::test]
async fn a_metric_without_an_address_queries_the_default_prometheus() {
    let server = ApiServer::start();
    let default = FakePrometheus::start(true).await;
    let ctx = with_default(context(&server, Vec::new()), &default.address);
    let run = run_without_address("defaulted", "up", json!(null), json!([]));
    let stored = reconcile_stored(&server, &ctx, run).await;
    let (phase, message) = phase_and_message(&stored);
    assert_eq!(phase, "Successful", "{message}: {stored}");
    assert_eq!(default.requests().len(), 1, "one query to the default");
    assert!(
        stored["spec"]["metrics"][0]["provider"]["prometheus"]
            .get("address")
            .is_none(),
        "the run is kept as written: {stored}"
    );
}

#[tokio::test]
async fn a_metric_naming_its_address_is_not_sent_to_the_default() {
    let server = ApiServer::start();
    let default = FakePrometheus::start(true).await;
    let own = FakePrometheus::start(true).await;
    let ctx = with_default(context(&server, Vec::new()), &default.address);
    let run = super::trust_tests::run_with("own", &own.address, "up", json!(null), json!([]));
    let stored = reconcile_stored(&server, &ctx, run).await;
    assert_eq!(phase_and_message(&stored).0, "Successful", "{stored}");
    assert_eq!(own.requests().len(), 1);
    assert!(
        default.requests().is_empty(),
        "the default is only a default"
    );
}

#[tokio::test]
async fn without_an_address_or_a_default_the_run_errors_naming_the_field_and_the_flag() {
    let server = ApiServer::start();
    let ctx = context(&server, Vec::new());
    let run = run_without_address("nowhere", "up", json!(null), json!([]));
    let stored = reconcile_stored(&server, &ctx, run).await;
    let (phase, message) = phase_and_message(&stored);
    assert_eq!(phase, "Error", "{stored}");
    assert!(
        message.contains("metrics[0] (errors): provider.prometheus.address: not set")
            && message.contains("--prometheus")
            && message.contains("VIGIL_PROMETHEUS"),
        "{message}"
    );
}

#[tokio::test]
async fn a_credential_file_reaches_the_default_prometheus_only_when_its_origin_is_listed() {
    let server = ApiServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let token = dir.path().join("token");
    std::fs::write(&token, "operator-file-token").expect("write");
    let dirs = vec![std::fs::canonicalize(dir.path()).expect("canonical")];
    let auth = json!({"bearerToken": {"file": token.display().to_string()}});

    let unlisted = FakePrometheus::start(true).await;
    let ctx = with_default(
        context_sending_files_to(&server, dirs.clone(), &[]),
        &unlisted.address,
    );
    let run = run_without_address("unlisted", "up", auth.clone(), json!([]));
    let stored = reconcile_stored(&server, &ctx, run).await;
    let (phase, message) = phase_and_message(&stored);
    assert_eq!(phase, "Error", "{stored}");
    assert!(message.contains("--credential-origin"), "{message}");
    assert!(unlisted.requests().is_empty(), "nothing is sent");

    let listed = FakePrometheus::start(true).await;
    let ctx = with_default(
        context_sending_files_to(&server, dirs, &[&listed.address]),
        &listed.address,
    );
    let run = run_without_address("listed", "up", auth, json!([]));
    let stored = reconcile_stored(&server, &ctx, run).await;
    assert_eq!(phase_and_message(&stored).0, "Successful", "{stored}");
    let requests = listed.requests().join("\n").to_ascii_lowercase();
    assert!(
        requests.contains("authorization: bearer operator-file-token"),
        "{requests}"
    );
}

#[tokio::test]
async fn a_secret_argument_goes_to_the_default_prometheus_only_when_the_secret_lists_it() {
    let server = ApiServer::start();
    let default = FakePrometheus::start(true).await;
    let elsewhere = FakePrometheus::start(true).await;
    let ctx = with_default(context(&server, Vec::new()), &default.address);
    let args =
        json!([{"name": "tenant", "valueFrom": {"secretKeyRef": {"name": "tenant", "key": "id"}}}]);
    let query = r#"sum(up{tenant="{{args.tenant}}"})"#;

    server
        .put_json(
            SECRETS,
            secret_for("tenant", "id", "acme", &elsewhere.address),
        )
        .expect("secret");
    let stored = reconcile_stored(
        &server,
        &ctx,
        run_without_address("unlisted", query, json!(null), args.clone()),
    )
    .await;
    let (phase, message) = phase_and_message(&stored);
    assert_eq!(phase, "Error", "{stored}");
    assert!(
        message.contains("vigil.dev/analysis-credential-origins"),
        "{message}"
    );
    assert!(default.requests().is_empty(), "nothing is sent");

    server
        .put_json(
            SECRETS,
            secret_for("tenant", "id", "acme", &default.address),
        )
        .expect("secret");
    let stored = reconcile_stored(
        &server,
        &ctx,
        run_without_address("listed", query, json!(null), args),
    )
    .await;
    assert_eq!(phase_and_message(&stored).0, "Successful", "{stored}");
    assert!(default.requests().join("\n").contains("acme"));
}

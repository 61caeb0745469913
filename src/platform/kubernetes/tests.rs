//! Controller I/O tests against a mocked API server (tower-test): each scenario runs one
//! reconcile and asserts the exact API calls it made, in order, with their bodies.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use jiff::Timestamp;
use kube::Client;
use kube::client::Body;
use kube::runtime::controller::Action;
use serde_json::{Value, json};

use kube::runtime::{reflector, watcher};

use super::cache::Caches;
use super::context::{
    Clock, Context, FINALIZER, MANAGED_BY_ANNOTATION, REVISION_LABEL, ROLLOUT_LABEL, TemplateIndex,
};
use super::{analysis_controller, rollout_controller};
use crate::analysis::provider::prometheus::ConcurrencyLimiter;
use crate::api::{
    AnalysisPhase, AnalysisRun, AnalysisRunSpec, AnalysisRunStatus, AnalysisStep, AnalysisTemplate,
    CanaryStep, ClusterAnalysisTemplate, GatewayApiRouting, Rollout, RolloutPhase, RolloutSpec,
    RolloutStatus, TemplateRef, TrafficRouting,
};
use crate::metrics::Metrics;
use crate::rollout::template_hash;

const NS: &str = "shop";
const UID: &str = "uid-web";

/// One request the reconcile made.
#[derive(Debug, Clone)]
struct Call {
    method: String,
    path: String,
    query: String,
    content_type: String,
    body: Value,
}

impl Call {
    /// Whether this call publishes an Event (done in the background, not by the reconcile).
    fn is_event(&self) -> bool {
        self.path.starts_with("/apis/events.k8s.io/")
    }

    /// `METHOD path` for compact sequence assertions.
    fn line(&self) -> String {
        format!("{} {}", self.method, self.path)
    }

    fn query_has(&self, part: &str) -> bool {
        self.query.split('&').any(|p| p == part)
    }
}

type Responder = Arc<dyn Fn(&Call) -> (u16, Value) + Send + Sync>;

/// A mocked API server answering with `responder` and recording every call.
struct ApiServerVerifier {
    calls: Arc<Mutex<Vec<Call>>>,
    task: tokio::task::JoinHandle<()>,
}

impl ApiServerVerifier {
    fn start(responder: Responder) -> (Client, ApiServerVerifier) {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let calls = Arc::new(Mutex::new(Vec::new()));
        let recorded = calls.clone();
        let task = tokio::spawn(async move {
            while let Some((request, send)) = handle.next_request().await {
                let (parts, body) = request.into_parts();
                let bytes = body.collect_bytes().await.unwrap_or_default();
                let call = Call {
                    method: parts.method.to_string(),
                    path: parts.uri.path().to_owned(),
                    query: parts.uri.query().unwrap_or("").to_owned(),
                    content_type: parts
                        .headers
                        .get(http::header::CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned(),
                    body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
                };
                let (status, answer) = responder(&call);
                recorded.lock().expect("calls").push(call);
                let response = Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .body(Body::from(serde_json::to_vec(&answer).unwrap_or_default()))
                    .expect("response");
                send.send_response(response);
            }
        });
        (
            Client::new(service, "default"),
            ApiServerVerifier { calls, task },
        )
    }

    /// The calls made, once the client is gone (the event queue's workers hold a client
    /// until the queue is drained, so every queued event is in). Events are published in
    /// the background, interleaved with the reconcile's own calls as the scheduler has it:
    /// they are listed last, each group in its own order.
    async fn finish(self) -> Vec<Call> {
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("the mock server stops once the client is dropped")
            .expect("mock server task");
        let calls = self.calls.lock().expect("calls").clone();
        let (events, others): (Vec<Call>, Vec<Call>) = calls.into_iter().partition(Call::is_event);
        others.into_iter().chain(events).collect()
    }
}

fn context(client: Client) -> Arc<Context> {
    Arc::new(plain_context(client))
}

fn plain_context(client: Client) -> Context {
    let mut ctx = Context::new(
        client,
        Metrics::default(),
        ConcurrencyLimiter::default(),
        Some("vigil-0".into()),
    );
    ctx.clock = Clock::Fixed(now());
    // Synced and empty: a scenario fills them with its cluster (see `caches_of`).
    ctx.caches = Caches::holding(vec![], vec![], vec![], vec![]);
    ctx
}

/// Objects as the API server stores them: in the scenario's namespace unless they say.
fn parse<K: serde::de::DeserializeOwned>(values: impl IntoIterator<Item = Value>) -> Vec<K> {
    values
        .into_iter()
        .map(|mut v| {
            if v["metadata"]["namespace"].is_null() {
                v["metadata"]["namespace"] = json!(NS);
            }
            serde_json::from_value(v).expect("a valid object")
        })
        .collect()
}

/// The controller's caches of `cluster`, as its watches would have filled them (the route is
/// read from the API server, as when the Gateway API CRDs were installed after startup).
fn caches_of(cluster: &Cluster) -> Caches {
    Caches::holding(
        parse(cluster.replica_sets.clone()),
        parse(cluster.runs.clone()),
        parse(cluster.services.values().cloned()),
        parse(cluster.deployment.clone()),
    )
}

/// The reflector caches of a scenario's AnalysisTemplates, as the controller's context holds
/// them (so a template is never read by GET).
fn template_index(templates: &BTreeMap<String, Value>) -> TemplateIndex {
    let (namespaced, mut writer) = reflector::store::<AnalysisTemplate>();
    let (cluster, _) = reflector::store::<ClusterAnalysisTemplate>();
    for template in templates.values() {
        let template: AnalysisTemplate =
            serde_json::from_value(template.clone()).expect("template");
        writer.apply_watcher_event(&watcher::Event::Apply(template));
    }
    TemplateIndex {
        namespaced,
        cluster,
    }
}

/// The template the `analysis` step of [`steps`] uses.
fn error_rate_template() -> Value {
    json!({
        "apiVersion": "vigil.dev/v1alpha1", "kind": "AnalysisTemplate",
        "metadata": {"name": "error-rate", "namespace": NS},
        "spec": {
            "args": [{"name": "canary-revision"}],
            "metrics": [{"name": "errors", "interval": "30s", "count": 3,
                         "successCondition": "result < 0.01",
                         "provider": {"prometheus": {"address": "http://prometheus:9090",
                             "query": "sum(rate(errors{revision=\"{{args.canary-revision}}\"}[1m]))"}}}]
        }
    })
}

fn now() -> Timestamp {
    Timestamp::from_second(1_800_000_000).expect("timestamp")
}

fn not_found(what: &str) -> (u16, Value) {
    (
        404,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
               "reason": "NotFound", "code": 404, "message": format!("{what} not found")}),
    )
}

fn list(items: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "7"}, "items": items})
}

fn image_template(image: &str) -> k8s_openapi::api::core::v1::PodTemplateSpec {
    serde_json::from_value(json!({
        "metadata": {"labels": {"app": "web"}},
        "spec": {"containers": [{"name": "web", "image": image}]}
    }))
    .expect("template")
}

fn steps() -> Vec<CanaryStep> {
    vec![
        CanaryStep {
            set_weight: Some(20),
            ..CanaryStep::default()
        },
        CanaryStep {
            analysis: Some(AnalysisStep {
                templates: vec![TemplateRef {
                    template_name: "error-rate".into(),
                    cluster_scope: false,
                }],
                args: vec![],
            }),
            ..CanaryStep::default()
        },
        CanaryStep {
            set_weight: Some(100),
            ..CanaryStep::default()
        },
    ]
}

/// The Rollout `web` (4 replicas, image `web:2`), finalized, with services and optionally an
/// HTTPRoute.
fn rollout(router: bool, status: Option<RolloutStatus>) -> Rollout {
    let mut spec = RolloutSpec {
        replicas: Some(4),
        selector: serde_json::from_value(json!({"matchLabels": {"app": "web"}})).expect("sel"),
        template: Some(Box::new(image_template("web:2"))),
        ..RolloutSpec::default()
    };
    let canary = &mut spec.strategy.canary;
    canary.steps = steps();
    canary.stable_service = Some("web-stable".into());
    canary.canary_service = Some("web-canary".into());
    if router {
        canary.traffic_routing = Some(TrafficRouting {
            gateway_api: Some(GatewayApiRouting {
                http_route: "web".into(),
            }),
            ..TrafficRouting::default()
        });
    }
    let mut rollout = Rollout::new("web", spec);
    rollout.metadata.namespace = Some(NS.into());
    rollout.metadata.uid = Some(UID.into());
    rollout.metadata.resource_version = Some("41".into());
    rollout.metadata.generation = Some(2);
    rollout.metadata.finalizers = Some(vec![FINALIZER.into()]);
    rollout.status = status;
    rollout
}

fn owner() -> Value {
    json!([{"apiVersion": "vigil.dev/v1alpha1", "kind": "Rollout", "name": "web",
            "uid": UID, "controller": true, "blockOwnerDeletion": true}])
}

fn replica_set(revision: &str, replicas: i32, ready: i32) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": format!("web-{revision}"), "namespace": NS,
                     "labels": {ROLLOUT_LABEL: "web", REVISION_LABEL: revision},
                     "ownerReferences": owner(),
                     "creationTimestamp": "2027-01-01T00:00:00Z"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web", REVISION_LABEL: revision}}},
        "status": {"replicas": replicas, "readyReplicas": ready}
    })
}

/// A Service `web` pointed (and so claimed) at `revision`.
fn service(name: &str, revision: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": name, "namespace": NS, "resourceVersion": "7",
                        "annotations": {MANAGED_BY_ANNOTATION: "web"}},
           "spec": {"selector": {"app": "web", REVISION_LABEL: revision}}})
}

fn route(stable_weight: i64, canary_weight: i64) -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "web", "namespace": NS, "resourceVersion": "5"},
        "spec": {"parentRefs": [{"name": "gw"}], "rules": [{"backendRefs": [
            {"name": "web-stable", "port": 80, "weight": stable_weight},
            {"name": "web-canary", "port": 80, "weight": canary_weight}
        ]}]}
    })
}

/// The cluster a scenario starts from; anything not listed is answered "not found". It has
/// the `error-rate` template unless a scenario removes it.
#[derive(Clone)]
struct Cluster {
    replica_sets: Vec<Value>,
    services: BTreeMap<String, Value>,
    route: Option<Value>,
    runs: Vec<Value>,
    templates: BTreeMap<String, Value>,
    /// Status code of the status write (200 or a conflict).
    status_write: Option<u16>,
    /// The Deployment `web` (for `spec.workloadRef`).
    deployment: Option<Value>,
    /// The Deployment's replicas changed since read: its guarded patch fails.
    deployment_changed: bool,
    /// Other Rollouts of the namespace, by name (read to check a Service's claim).
    other_rollouts: BTreeMap<String, Value>,
}

impl Default for Cluster {
    fn default() -> Self {
        Cluster {
            replica_sets: Vec::new(),
            services: BTreeMap::new(),
            route: None,
            runs: Vec::new(),
            templates: BTreeMap::from([("error-rate".to_owned(), error_rate_template())]),
            status_write: None,
            deployment: None,
            deployment_changed: false,
            other_rollouts: BTreeMap::new(),
        }
    }
}

impl Cluster {
    fn responder(self) -> Responder {
        Arc::new(move |call: &Call| {
            let base = format!("/apis/vigil.dev/v1alpha1/namespaces/{NS}");
            let path = call.path.as_str();
            match call.method.as_str() {
                "GET" if path == format!("/apis/apps/v1/namespaces/{NS}/replicasets") => {
                    (200, list(self.replica_sets.clone()))
                }
                "GET" if path == format!("{base}/analysisruns") => (200, list(self.runs.clone())),
                "PATCH" if path == DEPLOYMENT && self.deployment_changed => (
                    422,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                           "reason": "Invalid", "code": 422,
                           "message": "the JSON patch failed: test failed"}),
                ),
                "GET" | "PATCH" if path == DEPLOYMENT => self
                    .deployment
                    .clone()
                    .map_or_else(|| not_found(path), |d| (200, d)),
                "GET" => {
                    let name = path.rsplit('/').next().unwrap_or("");
                    let found = if path.contains("/services/") {
                        self.services.get(name).cloned()
                    } else if path.contains("/httproutes/") {
                        self.route.clone()
                    } else if path.contains("/analysistemplates/") {
                        self.templates.get(name).cloned()
                    } else if path.contains("/rollouts/") {
                        self.other_rollouts.get(name).cloned()
                    } else {
                        None
                    };
                    found.map_or_else(|| not_found(path), |v| (200, v))
                }
                "PATCH" if path.ends_with("/rollouts/web/status") => match self.status_write {
                    Some(409) => (
                        409,
                        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                               "reason": "Conflict", "code": 409, "message": "the object has been modified"}),
                    ),
                    // The write keeps the version observed, so a second reconcile of the
                    // same copy is not held for a newer one.
                    _ => (
                        200,
                        json!({"apiVersion": "vigil.dev/v1alpha1", "kind": "Rollout",
                               "metadata": {"name": "web", "namespace": NS,
                                            "resourceVersion": patched(&call.body, "/metadata/resourceVersion")},
                               "status": patched(&call.body, "/status")}),
                    ),
                },
                "POST" => (201, call.body.clone()),
                "PATCH" if path.contains("/httproutes/") => {
                    (200, self.route.clone().unwrap_or(Value::Null))
                }
                "PATCH" if path.contains("/services/") => {
                    let name = path.rsplit('/').next().unwrap_or("");
                    (200, self.services.get(name).cloned().unwrap_or(Value::Null))
                }
                "PATCH" if path.contains("/replicasets/") => (
                    200,
                    self.replica_sets.first().cloned().unwrap_or(Value::Null),
                ),
                "PATCH" if path.contains("/analysisruns/") => (
                    200,
                    json!({"apiVersion": "vigil.dev/v1alpha1", "kind": "AnalysisRun",
                           "metadata": {"name": "r", "namespace": NS}, "spec": {"metrics": []}}),
                ),
                "PATCH" if path.contains("/rollouts/") => (
                    200,
                    serde_json::to_value(rollout(false, None)).unwrap_or_default(),
                ),
                _ => not_found(path),
            }
        })
    }
}

async fn reconcile_rollout(
    rollout: Rollout,
    cluster: Cluster,
) -> (Result<Action, String>, Vec<Call>, Metrics) {
    reconcile_with(rollout, cluster, true).await
}

/// One reconcile; `cached`: whether the context holds template caches (false: the caches
/// were not ready at startup).
async fn reconcile_with(
    rollout: Rollout,
    cluster: Cluster,
    cached: bool,
) -> (Result<Action, String>, Vec<Call>, Metrics) {
    let templates = template_index(&cluster.templates);
    let cluster_copy = cluster.clone();
    let (client, verifier) = ApiServerVerifier::start(cluster.responder());
    let mut ctx = plain_context(client);
    ctx.templates = cached.then_some(templates);
    ctx.caches = caches_of(&cluster_copy);
    let ctx = Arc::new(ctx);
    let metrics = ctx.metrics.clone();
    let result = tokio::time::timeout(
        Duration::from_secs(10),
        rollout_controller::reconcile(Arc::new(rollout), ctx),
    )
    .await
    .expect("reconcile finishes")
    .map_err(|e| format!("{}: {e}", e.category()));
    (result, verifier.finish().await, metrics)
}

/// The reconcile's own last call: the events, published in the background, are listed
/// after it (see [`ApiServerVerifier::finish`]).
fn last_own(calls: &[Call]) -> Option<&Call> {
    calls.iter().rev().find(|call| !call.is_event())
}

fn lines(calls: &[Call]) -> Vec<String> {
    calls.iter().map(Call::line).collect()
}

const RS: &str = "/apis/apps/v1/namespaces/shop/replicasets";
const RUNS: &str = "/apis/vigil.dev/v1alpha1/namespaces/shop/analysisruns";
const STATUS: &str = "/apis/vigil.dev/v1alpha1/namespaces/shop/rollouts/web/status";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/shop/events";
const STABLE_SVC: &str = "/api/v1/namespaces/shop/services/web-stable";
const CANARY_SVC: &str = "/api/v1/namespaces/shop/services/web-canary";
const ROUTE: &str = "/apis/gateway.networking.k8s.io/v1/namespaces/shop/httproutes/web";
const DEPLOYMENT: &str = "/apis/apps/v1/namespaces/shop/deployments/web";

/// The value a JSON patch body sets at `path` (`Null` when no operation sets it).
fn patched(body: &Value, path: &str) -> Value {
    body.as_array()
        .into_iter()
        .flatten()
        .find(|op| op["path"] == json!(path) && (op["op"] == "add" || op["op"] == "replace"))
        .map_or(Value::Null, |op| op["value"].clone())
}

fn status_of(call: &Call) -> RolloutStatus {
    serde_json::from_value(patched(&call.body, "/status")).expect("status body")
}

fn assert_status_write(call: &Call) {
    assert_eq!(call.line(), format!("PATCH {STATUS}"));
    assert_eq!(call.content_type, "application/json-patch+json");
    assert!(
        call.query_has("fieldManager=vigil.dev%2Fcontroller"),
        "{}",
        call.query
    );
    // Optimistic concurrency: the observed resourceVersion goes back with the write; the
    // spec does not (the status subresource would ignore it).
    assert_eq!(
        patched(&call.body, "/metadata/resourceVersion"),
        json!("41")
    );
    assert_eq!(call.body.as_array().map(Vec::len), Some(2), "{}", call.body);
}

/// A Rollout `name` of the namespace naming `stable_service` as its stable Service.
fn other_rollout(name: &str, stable_service: &str) -> Value {
    json!({"apiVersion": "vigil.dev/v1alpha1", "kind": "Rollout",
           "metadata": {"name": name, "namespace": NS},
           "spec": {"selector": {"matchLabels": {"app": name}},
                    "strategy": {"canary": {"stableService": stable_service}}}})
}

/// Services `web-stable` (claimed by `claimant`, unpointed) and `web-canary` (unclaimed).
fn claimed_services(claimant: &str) -> BTreeMap<String, Value> {
    BTreeMap::from([
        (
            "web-stable".into(),
            json!({"metadata": {"name": "web-stable", "resourceVersion": "5",
                                "annotations": {MANAGED_BY_ANNOTATION: claimant}},
                   "spec": {"selector": {"app": "web"}}}),
        ),
        (
            "web-canary".into(),
            json!({"metadata": {"name": "web-canary", "resourceVersion": "6"},
                   "spec": {"selector": {"app": "web"}}}),
        ),
    ])
}

/// A Service another Rollout manages and still names (that Rollout read from the API server:
/// the index does not hold it, e.g. another shard's): the rollout holds at the field naming
/// it, and no Service, ReplicaSet or router is touched.
#[tokio::test]
async fn a_service_another_rollout_manages_holds_the_rollout_at_its_field() {
    let cluster = Cluster {
        services: claimed_services("checkout"),
        other_rollouts: BTreeMap::from([(
            "checkout".into(),
            other_rollout("checkout", "web-stable"),
        )]),
        ..Cluster::default()
    };
    let (result, calls, _) = reconcile_rollout(rollout(false, None), cluster).await;
    // Held: it looks again now and then, as nothing need wake it when the claim ends.
    assert_eq!(result, Ok(Action::requeue(Duration::from_secs(20))));
    let checkout = "/apis/vigil.dev/v1alpha1/namespaces/shop/rollouts/checkout";
    assert_eq!(
        lines(&calls),
        vec![
            format!("GET {checkout}"),
            format!("PATCH {STATUS}"),
            format!("POST {EVENTS}")
        ],
        "{calls:#?}"
    );
    assert_eq!(calls[2].body["reason"], json!("InvalidSpec"));
    let status = status_of(&calls[1]);
    assert_eq!(status.phase, Some(RolloutPhase::Degraded));
    let message = status.message.unwrap_or_default();
    assert!(
        message.contains(
            "spec.strategy.canary.stableService: Service \"web-stable\" is managed by Rollout \"checkout\""
        ),
        "{message}"
    );
}

/// A claim whose Rollout is gone, or names another Service now, passes on: the Service is
/// pointed and claimed, guarded by the resourceVersion it was read at.
#[tokio::test]
async fn a_stale_claim_passes_to_the_rollout_that_points_the_service_next() {
    for other in [None, Some(other_rollout("checkout", "checkout-stable"))] {
        let cluster = Cluster {
            services: claimed_services("checkout"),
            other_rollouts: other
                .into_iter()
                .map(|r| ("checkout".to_owned(), r))
                .collect(),
            ..Cluster::default()
        };
        let (result, calls, _) = reconcile_rollout(rollout(false, None), cluster).await;
        result.expect("reconciled");
        let patches: Vec<&Call> = calls
            .iter()
            .filter(|c| {
                c.line()
                    .starts_with("PATCH /api/v1/namespaces/shop/services/")
            })
            .collect();
        assert_eq!(patches.len(), 2, "{calls:#?}");
        let revision = template_hash(&image_template("web:2"));
        for (patch, version) in patches.iter().zip(["5", "6"]) {
            assert_eq!(
                patch.body,
                json!({"metadata": {"annotations": {MANAGED_BY_ANNOTATION: "web"},
                                    "resourceVersion": version},
                       "spec": {"selector": {REVISION_LABEL: revision}}})
            );
        }
    }
}

/// Deleting a Rollout whose Service another Rollout manages now leaves that Service alone.
#[tokio::test]
async fn deleting_a_rollout_leaves_a_service_another_rollout_manages_alone() {
    let (status, mut cluster) = in_flight(1, 20);
    cluster.services = claimed_services("checkout");
    cluster.other_rollouts =
        BTreeMap::from([("checkout".into(), other_rollout("checkout", "web-stable"))]);
    let mut r = rollout(true, Some(status));
    r.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now()));
    let (result, calls, _) = reconcile_rollout(r, cluster).await;
    assert_eq!(result, Ok(Action::await_change()));
    assert_eq!(
        lines(&calls),
        vec![
            format!("GET {ROUTE}"),
            format!("PATCH {ROUTE}"),
            "GET /apis/vigil.dev/v1alpha1/namespaces/shop/rollouts/checkout".to_owned(),
            format!("PATCH {CANARY_SVC}"),
            "PATCH /apis/vigil.dev/v1alpha1/namespaces/shop/rollouts/web".to_owned(),
        ],
        "{calls:#?}"
    );
}

#[tokio::test]
async fn a_first_revision_creates_its_replica_set_and_points_both_services() {
    let revision = template_hash(&image_template("web:2"));
    let cluster = Cluster {
        services: BTreeMap::from([
            (
                "web-stable".into(),
                json!({"metadata": {"name": "web-stable"}, "spec": {"selector": {"app": "web"}}}),
            ),
            (
                "web-canary".into(),
                json!({"metadata": {"name": "web-canary"}, "spec": {"selector": {"app": "web"}}}),
            ),
        ]),
        ..Cluster::default()
    };
    let (result, calls, metrics) = reconcile_rollout(rollout(false, None), cluster).await;
    let action = result.expect("reconciled");
    assert_eq!(
        lines(&calls),
        vec![
            format!("PATCH {STABLE_SVC}"),
            format!("PATCH {CANARY_SVC}"),
            format!("POST {RS}"),
            format!("PATCH {STATUS}"),
            format!("POST {EVENTS}"),
        ],
        "{calls:#?}"
    );
    let created = &calls[2].body;
    assert!(calls[2].query_has("fieldManager=vigil.dev%2Fcontroller"));
    assert_eq!(
        created["metadata"]["name"],
        json!(format!("web-{revision}"))
    );
    assert_eq!(created["spec"]["replicas"], json!(4));
    assert_eq!(
        created["spec"]["selector"]["matchLabels"][REVISION_LABEL],
        json!(revision)
    );
    assert_eq!(
        created["spec"]["template"]["metadata"]["labels"][REVISION_LABEL],
        json!(revision)
    );
    assert_eq!(created["metadata"]["ownerReferences"][0]["uid"], json!(UID));
    for call in &calls[0..2] {
        // Only the revision key of the selector and the Rollout's claim, as a merge patch.
        assert_eq!(
            call.body,
            json!({"metadata": {"annotations": {MANAGED_BY_ANNOTATION: "web"}},
                   "spec": {"selector": {REVISION_LABEL: revision}}})
        );
        assert_eq!(call.content_type, "application/merge-patch+json");
    }
    assert_eq!(
        calls[4].body["reason"],
        json!("InitialDeployment"),
        "{:#?}",
        calls[4].body
    );
    assert_status_write(&calls[3]);
    let status = status_of(&calls[3]);
    assert_eq!(status.stable_revision.as_deref(), Some(revision.as_str()));
    assert_eq!(status.phase, Some(RolloutPhase::Progressing));
    // No polling after acting: the new ReplicaSet's watch events wake the Rollout; the
    // in-flight resync is the only timer.
    assert_eq!(action, Action::requeue(Duration::from_secs(300)));
    assert!(
        metrics
            .encode()
            .contains("vigil_rollout_phase_transitions_total{from=\"None\",to=\"Progressing\"} 1")
    );
}

fn stable_revision() -> String {
    template_hash(&image_template("web:1"))
}

fn canary_revision() -> String {
    template_hash(&image_template("web:2"))
}

/// A canary in flight at `step`: stable `web:1` at 4/4, canary `web:2` at 1/1, both services
/// pointed, the route at `weight`.
fn in_flight(step: i32, weight: i32) -> (RolloutStatus, Cluster) {
    let (stable, canary) = (stable_revision(), canary_revision());
    let status = RolloutStatus {
        phase: Some(RolloutPhase::Progressing),
        observed_generation: Some(2),
        current_step_index: Some(step),
        step: Some(format!("{step}/3")),
        current_step_started_at: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            Timestamp::from_second(1_800_000_000 - 30).expect("ts"),
        )),
        stable_revision: Some(stable.clone()),
        canary_revision: Some(canary.clone()),
        canary_weight: weight,
        canary_attempt: 1,
        ..RolloutStatus::default()
    };
    let cluster = Cluster {
        replica_sets: vec![replica_set(&stable, 4, 4), replica_set(&canary, 1, 1)],
        services: BTreeMap::from([
            ("web-stable".into(), service("web-stable", &stable)),
            ("web-canary".into(), service("web-canary", &canary)),
        ]),
        route: Some(route(i64::from(100 - weight), i64::from(weight))),
        ..Cluster::default()
    };
    (status, cluster)
}

#[tokio::test]
async fn a_set_weight_step_patches_only_the_route_weights_with_test_ops() {
    let (mut status, cluster) = in_flight(0, 0);
    status.canary_weight = 0;
    let (result, calls, _) = reconcile_rollout(rollout(true, Some(status)), cluster).await;
    result.expect("reconciled");
    let calls_lines = lines(&calls);
    assert_eq!(
        calls_lines[..2],
        [
            format!("GET {ROUTE}"),
            // SetWeight reads the route it patches, then patches it.
            format!("GET {ROUTE}"),
        ]
    );
    let patch = &calls[2];
    assert_eq!(patch.line(), format!("PATCH {ROUTE}"));
    assert_eq!(patch.content_type, "application/json-patch+json");
    assert!(
        patch.query_has("fieldManager=vigil.dev%2Fcontroller"),
        "{}",
        patch.query
    );
    assert_eq!(
        patch.body,
        json!([
            {"op": "test", "path": "/spec/rules/0/backendRefs/0/name", "value": "web-stable"},
            {"op": "test", "path": "/spec/rules/0/backendRefs/0/weight", "value": 100},
            {"op": "replace", "path": "/spec/rules/0/backendRefs/0/weight", "value": 80},
            {"op": "test", "path": "/spec/rules/0/backendRefs/1/name", "value": "web-canary"},
            {"op": "test", "path": "/spec/rules/0/backendRefs/1/weight", "value": 0},
            {"op": "replace", "path": "/spec/rules/0/backendRefs/1/weight", "value": 20},
        ])
    );
    let write = last_own(&calls).expect("status write");
    assert_status_write(write);
    assert_eq!(status_of(write).canary_weight, 20);
}

#[tokio::test]
async fn an_analysis_step_creates_an_owned_run_from_the_template_with_builtin_args() {
    // The template comes from the reflector cache in observe: no GET of it, the run is
    // created straight after the reads.
    let (status, cluster) = in_flight(1, 20);
    let (result, calls, _) = reconcile_rollout(rollout(true, Some(status)), cluster).await;
    result.expect("reconciled");
    let calls_lines = lines(&calls);
    assert_eq!(calls_lines[1], format!("POST {RUNS}"), "{calls_lines:#?}");
    assert!(
        !calls_lines
            .iter()
            .any(|l| l.contains("/analysistemplates/")),
        "{calls_lines:#?}"
    );
    let create = &calls[1];
    let run = &create.body;
    let name = format!("web-{}-1-step1", canary_revision());
    assert_eq!(run["metadata"]["name"], json!(name));
    assert_eq!(
        run["metadata"]["labels"]["vigil.dev/analysis"],
        json!("step")
    );
    assert_eq!(run["metadata"]["ownerReferences"][0]["uid"], json!(UID));
    let query = run["spec"]["metrics"][0]["provider"]["prometheus"]["query"]
        .as_str()
        .expect("query");
    assert!(query.contains(&canary_revision()), "{query}");
    assert_status_write(last_own(&calls).expect("status write"));
}

#[tokio::test]
async fn an_abort_moves_traffic_first_and_terminates_the_running_analysis() {
    let (mut status, mut cluster) = in_flight(1, 20);
    status.abort = true;
    let run = format!("web-{}-1-step1", canary_revision());
    cluster.runs.push(json!({
        "apiVersion": "vigil.dev/v1alpha1", "kind": "AnalysisRun",
        "metadata": {"name": run, "namespace": NS, "ownerReferences": owner(),
                     "labels": {ROLLOUT_LABEL: "web"}},
        "spec": {"metrics": []},
        "status": {"phase": "Running"}
    }));
    let (result, calls, metrics) = reconcile_rollout(rollout(true, Some(status)), cluster).await;
    result.expect("reconciled");
    let calls_lines = lines(&calls);
    let first_write = calls
        .iter()
        .position(|c| c.method != "GET")
        .expect("a write");
    // Traffic leaves the canary before anything else happens.
    assert_eq!(calls[first_write].line(), format!("PATCH {ROUTE}"));
    assert_eq!(calls[first_write].body[5]["value"], json!(0));
    let terminate = calls
        .iter()
        .find(|c| c.path == format!("{RUNS}/{run}"))
        .expect("terminate");
    assert_eq!(terminate.method, "PATCH");
    assert_eq!(terminate.body, json!({"spec": {"terminate": true}}));
    let events: Vec<_> = calls.iter().filter(|c| c.path == EVENTS).collect();
    assert!(!events.is_empty(), "{calls_lines:#?}");
    assert_eq!(events[0].body["regarding"]["name"], json!("web"));
    assert_eq!(
        events[0].body["reportingController"],
        json!("vigil-controller")
    );
    let status = status_of(last_own(&calls).expect("status"));
    assert_eq!(status.phase, Some(RolloutPhase::Aborted));
    let text = metrics.encode();
    assert!(text.contains("to=\"Aborted\""), "{text}");
    assert!(
        text.contains("vigil_rollouts{phase=\"Aborted\"} 1"),
        "{text}"
    );
}

#[tokio::test]
async fn a_status_conflict_requeues_at_once_without_an_error() {
    let (status, mut cluster) = in_flight(0, 0);
    cluster.status_write = Some(409);
    let (result, calls, metrics) = reconcile_rollout(rollout(true, Some(status)), cluster).await;
    assert_eq!(result, Ok(Action::requeue(Duration::from_millis(100))));
    assert_eq!(
        last_own(&calls).map(Call::line),
        Some(format!("PATCH {STATUS}"))
    );
    assert!(metrics.encode().contains("category=\"status_conflict\""));
}

#[tokio::test]
async fn a_settled_rollout_writes_nothing() {
    let stable = stable_revision();
    let mut r = rollout(false, None);
    r.spec.template = Some(Box::new(image_template("web:1")));
    let cluster = Cluster {
        replica_sets: vec![replica_set(&stable, 4, 4)],
        services: BTreeMap::from([
            ("web-stable".into(), service("web-stable", &stable)),
            ("web-canary".into(), service("web-canary", &stable)),
        ]),
        ..Cluster::default()
    };
    // First reconcile records Healthy; feeding its status back must write nothing.
    let (result, calls, _) = reconcile_rollout(r.clone(), cluster.clone()).await;
    result.expect("first");
    let status = status_of(last_own(&calls).expect("status write"));
    assert_eq!(status.phase, Some(RolloutPhase::Healthy), "{status:?}");
    r.status = Some(status);
    let (result, calls, metrics) = reconcile_rollout(r, cluster).await;
    assert_eq!(result, Ok(Action::await_change()));
    // Steady state: everything is read from the caches, so no request at all (no LIST of
    // ReplicaSets or AnalysisRuns, no GET of the Services).
    assert!(calls.is_empty(), "{:#?}", lines(&calls));
    // A restarted controller counts the Rollout even when nothing changes.
    let text = metrics.encode();
    assert!(
        text.contains("vigil_rollouts{phase=\"Healthy\"} 1"),
        "{text}"
    );
}

#[tokio::test]
async fn a_canary_in_flight_with_its_route_cached_reads_nothing_from_the_api_server() {
    let (status, cluster) = in_flight(1, 20);
    let route: kube::api::DynamicObject =
        serde_json::from_value(cluster.route.clone().expect("route")).expect("route object");
    let caches = caches_of(&cluster).with_router_objects(
        &crate::traffic::gateway_api::http_route_resource(),
        vec![route],
    );
    let templates = template_index(&cluster.templates);
    let (client, verifier) = ApiServerVerifier::start(cluster.responder());
    let mut ctx = plain_context(client);
    ctx.templates = Some(templates);
    ctx.caches = caches;
    let result = tokio::time::timeout(
        Duration::from_secs(10),
        rollout_controller::reconcile(Arc::new(rollout(true, Some(status))), Arc::new(ctx)),
    )
    .await
    .expect("reconcile finishes");
    result.expect("reconciled");
    let calls = verifier.finish().await;
    // At its analysis step: the run is created from what the caches hold, nothing read.
    let reads: Vec<String> = calls
        .iter()
        .filter(|c| c.method == "GET")
        .map(Call::line)
        .collect();
    assert!(reads.is_empty(), "{reads:#?}");
}

#[tokio::test]
async fn a_rollout_older_than_its_last_status_write_waits_for_the_cache() {
    let (status, cluster) = in_flight(1, 20);
    let (client, verifier) = ApiServerVerifier::start(cluster.clone().responder());
    let mut ctx = plain_context(client);
    ctx.caches = caches_of(&cluster);
    ctx.caches.written.wrote(
        crate::traffic::objects::WrittenVersions::key("Rollout", NS, "web"),
        Some("42"),
    );
    // The copy at resourceVersion 41 predates the write that returned 42.
    let result =
        rollout_controller::reconcile(Arc::new(rollout(true, Some(status))), Arc::new(ctx))
            .await
            .expect("no error");
    assert_eq!(result, Action::requeue(Duration::from_millis(200)));
    assert!(
        verifier.finish().await.is_empty(),
        "no request, no decision"
    );
}

#[tokio::test]
async fn the_version_a_status_write_made_holds_back_older_copies() {
    let (status, mut cluster) = in_flight(1, 20);
    cluster.templates.clear();
    let inner = cluster.clone().responder();
    // The server answers the write with the version it made, 42 (the copy read was at 41).
    let responder: Responder = Arc::new(move |call: &Call| {
        if call.method == "PATCH" && call.path == STATUS {
            return (
                200,
                json!({"apiVersion": "vigil.dev/v1alpha1", "kind": "Rollout",
                       "metadata": {"name": "web", "namespace": NS, "resourceVersion": "42"}}),
            );
        }
        inner(call)
    });
    let (client, verifier) = ApiServerVerifier::start(responder);
    let mut ctx = plain_context(client);
    ctx.templates = Some(template_index(&cluster.templates));
    ctx.caches = caches_of(&cluster);
    let ctx = Arc::new(ctx);
    rollout_controller::reconcile(Arc::new(rollout(true, Some(status))), ctx.clone())
        .await
        .expect("reconciled");
    let key = crate::traffic::objects::WrittenVersions::key("Rollout", NS, "web");
    assert!(ctx.caches.written.is_stale(&key, Some("41")));
    assert!(!ctx.caches.written.is_stale(&key, Some("42")));
    drop(ctx);
    let calls = verifier.finish().await;
    assert!(
        calls.iter().any(|c| c.line() == format!("PATCH {STATUS}")),
        "{:#?}",
        lines(&calls)
    );
}

#[tokio::test]
async fn a_forbidden_watch_shows_in_readyz_and_the_metric() {
    use super::cache::{CacheReporting, Index, references, spawn_referenced, trim_service};
    let responder: Responder = Arc::new(|_call: &Call| {
        (
            403,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden",
                   "code": 403, "message": "services is forbidden: User \"system:serviceaccount:vigil-system:vigil\" cannot list resource \"services\""}),
        )
    });
    let (client, _verifier) = ApiServerVerifier::start(responder);
    let (wake, _woken) = tokio::sync::mpsc::unbounded_channel();
    let ready = super::server::Readiness::default();
    ready.set(true);
    let metrics = Metrics::default();
    let reporting = CacheReporting {
        health: ready.watches().clone(),
        metrics: metrics.clone(),
        wake,
    };
    let (services, _task) = spawn_referenced(
        kube::Api::<k8s_openapi::api::core::v1::Service>::namespaced(client, NS),
        "Service",
        trim_service,
        (),
        &Index::new(references),
        &reporting,
    );
    let problems = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let problems = ready.problems();
            if problems.iter().any(|p| p.contains("failing")) {
                return problems;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the refusal shows in readiness");
    assert!(
        problems[0].starts_with("watch Service: failing: ") && problems[0].contains("forbidden"),
        "{problems:?}"
    );
    assert!(!services.is_synced());
    let text = metrics.encode();
    assert!(
        text.contains("vigil_watch_errors_total{resource=\"Service\"}"),
        "{text}"
    );
}

#[tokio::test]
async fn a_failed_write_is_a_categorised_error_and_backs_off() {
    let responder: Responder = Arc::new(|_call: &Call| {
        (
            500,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                     "reason": "InternalError", "code": 500, "message": "etcd is sad"}),
        )
    });
    let (client, verifier) = ApiServerVerifier::start(responder);
    let mut ctx = plain_context(client);
    ctx.templates = Some(template_index(&Cluster::default().templates));
    let ctx = Arc::new(ctx);
    let r = Arc::new(rollout(false, None));
    let error = tokio::time::timeout(
        Duration::from_secs(10),
        rollout_controller::reconcile(r.clone(), ctx.clone()),
    )
    .await
    .expect("in time")
    .expect_err("fails");
    // The first request is a write: no Service in the caches, so pointing the stable one
    // (reads come from the caches).
    assert_eq!(error.category(), "patch_service");
    assert!(!error.is_invalid_spec());
    let action = rollout_controller::error_policy(r.clone(), &error, ctx.clone());
    assert_ne!(action, Action::await_change());
    assert_eq!(ctx.backoff.failures("shop/web"), 1);
    assert!(ctx.metrics.encode().contains("category=\"patch_service\""));
    drop(ctx);
    assert_eq!(verifier.finish().await.len(), 1);
}

#[tokio::test]
async fn deleting_a_rollout_mid_way_returns_traffic_to_stable_then_drops_the_finalizer() {
    let (status, cluster) = in_flight(1, 20);
    let mut r = rollout(true, Some(status));
    r.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now()));
    let (result, calls, _) = reconcile_rollout(r, cluster).await;
    assert_eq!(result, Ok(Action::await_change()));
    let stable = stable_revision();
    assert_eq!(
        lines(&calls),
        vec![
            format!("GET {ROUTE}"),
            format!("PATCH {ROUTE}"),
            format!("PATCH {STABLE_SVC}"),
            format!("PATCH {CANARY_SVC}"),
            "PATCH /apis/vigil.dev/v1alpha1/namespaces/shop/rollouts/web".to_owned(),
        ]
    );
    assert_eq!(calls[1].body[2]["value"], json!(100));
    assert_eq!(calls[1].body[5]["value"], json!(0));
    // Back on stable, and the claim given up: another Rollout may take the Service over.
    assert_eq!(
        calls[3].body,
        json!({"metadata": {"annotations": {MANAGED_BY_ANNOTATION: null}},
               "spec": {"selector": {REVISION_LABEL: stable}}})
    );
    // The finalizer helper removes exactly ours, guarded by a test op.
    assert!(
        calls[4].body.to_string().contains("\"op\":\"remove\""),
        "{}",
        calls[4].body
    );
}

#[tokio::test]
async fn a_run_whose_provider_cannot_be_configured_errors_with_the_reason_via_ssa() {
    let (client, verifier) = ApiServerVerifier::start(Arc::new(|call: &Call| {
        let mut object = call.body.clone();
        object["metadata"] = json!({"name": "web-abc-1-step1", "namespace": NS});
        object["spec"] = json!({"metrics": []});
        (200, object)
    }));
    let ctx = context(client);
    let mut run = AnalysisRun::new(
        "web-abc-1-step1",
        serde_json::from_value::<AnalysisRunSpec>(json!({"metrics": [{"name": "errors",
            "successCondition": "result < 1",
            "provider": {"prometheus": {"address": "not a url", "query": "up"}}}]}))
        .expect("spec"),
    );
    run.metadata.namespace = Some(NS.into());
    let action = tokio::time::timeout(
        Duration::from_secs(10),
        analysis_controller::reconcile(Arc::new(run), ctx.clone()),
    )
    .await
    .expect("in time")
    .expect("reconciled");
    assert_eq!(action, Action::await_change());
    drop(ctx);
    let calls = verifier.finish().await;
    assert_eq!(
        lines(&calls),
        vec![format!("PATCH {RUNS}/web-abc-1-step1/status")]
    );
    let call = &calls[0];
    assert_eq!(call.content_type, "application/apply-patch+yaml");
    assert!(
        call.query_has("fieldManager=vigil.dev%2Fcontroller"),
        "{}",
        call.query
    );
    assert!(call.query_has("force=true"), "{}", call.query);
    assert_eq!(call.body["kind"], json!("AnalysisRun"));
    let status: AnalysisRunStatus =
        serde_json::from_value(call.body["status"].clone()).expect("status");
    assert_eq!(status.phase, Some(AnalysisPhase::Error));
    assert!(status.message.unwrap_or_default().contains("errors"));
}

#[tokio::test]
async fn a_completed_run_makes_no_call() {
    let (client, verifier) =
        ApiServerVerifier::start(Arc::new(|call: &Call| (200, call.body.clone())));
    let ctx = context(client);
    let mut run = AnalysisRun::new("done", AnalysisRunSpec::default());
    run.metadata.namespace = Some(NS.into());
    run.status = Some(AnalysisRunStatus {
        phase: Some(AnalysisPhase::Successful),
        ..AnalysisRunStatus::default()
    });
    let action = analysis_controller::reconcile(Arc::new(run), ctx.clone())
        .await
        .expect("reconciled");
    assert_eq!(action, Action::await_change());
    drop(ctx);
    assert!(verifier.finish().await.is_empty());
}

#[tokio::test]
async fn a_new_rollout_first_gets_the_finalizer_guarded_by_its_resource_version() {
    let mut r = rollout(false, None);
    r.metadata.finalizers = None;
    let (result, calls, _) = reconcile_rollout(r, Cluster::default()).await;
    assert_eq!(result, Ok(Action::await_change()));
    assert_eq!(
        lines(&calls),
        vec!["PATCH /apis/vigil.dev/v1alpha1/namespaces/shop/rollouts/web".to_owned()]
    );
    assert_eq!(calls[0].content_type, "application/json-patch+json");
    assert_eq!(
        calls[0].body,
        json!([
            {"op": "test", "path": "/metadata/resourceVersion", "value": "41"},
            {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]},
        ])
    );
}

#[test]
fn each_shard_elects_its_leader_on_its_own_lease() {
    use super::{LEASE_NAME, lease_name_for};
    assert_eq!(lease_name_for(None), LEASE_NAME);
    assert_eq!(lease_name_for(Some("  ")), LEASE_NAME);
    assert_eq!(
        lease_name_for(Some("vigil.dev/shard=A")),
        "vigil-controller-vigil.dev-shard-a"
    );
    assert_ne!(
        lease_name_for(Some("shard=a")),
        lease_name_for(Some("shard=b"))
    );
    let long = lease_name_for(Some(&format!("team in ({})", "x,".repeat(200))));
    assert!(long.len() <= crate::rollout::MAX_NAME_LEN, "{long}");
    assert!(
        long.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    );
}

/// The reads of one reconcile of a canary in flight, before the dereference step: only the
/// route (its kind is not cached in these scenarios); the rest comes from the caches.
fn reads() -> Vec<String> {
    vec![format!("GET {ROUTE}")]
}

#[tokio::test]
async fn a_missing_template_holds_the_rollout_from_observe_without_reading_it() {
    let (status, mut cluster) = in_flight(1, 20);
    cluster.templates.clear();
    let (result, calls, _) = reconcile_rollout(rollout(true, Some(status)), cluster).await;
    result.expect("reconciled");
    let calls_lines = lines(&calls);
    assert_eq!(calls_lines[..1], reads()[..], "{calls_lines:#?}");
    // Held from observe: no template GET, no run, the status (decided once) and events.
    assert!(
        calls_lines[1..]
            .iter()
            .all(|l| *l == format!("POST {EVENTS}") || *l == format!("PATCH {STATUS}")),
        "{calls_lines:#?}"
    );
    let write = last_own(&calls).expect("status write");
    assert_status_write(write);
    let message = status_of(write).message.unwrap_or_default();
    assert!(
        message.contains(r#"AnalysisTemplate "error-rate" does not exist in namespace "shop""#),
        "{message}"
    );
}

/// Only events and the status write after the reads: nothing moved.
fn assert_held(calls: &[Call]) {
    let calls_lines = lines(calls);
    assert_eq!(calls_lines[..1], reads()[..], "{calls_lines:#?}");
    assert!(
        calls_lines[1..]
            .iter()
            .all(|l| *l == format!("POST {EVENTS}") || *l == format!("PATCH {STATUS}")),
        "{calls_lines:#?}"
    );
}

#[tokio::test]
async fn a_missing_router_object_holds_the_rollout_with_its_field_named() {
    let (status, mut cluster) = in_flight(1, 20);
    cluster.route = None;
    let (result, calls, _) = reconcile_rollout(rollout(true, Some(status)), cluster).await;
    // The route is not watched: look again soon rather than wait for a Rollout change.
    assert_eq!(result, Ok(Action::requeue(Duration::from_secs(20))));
    assert_held(&calls);
    let write = last_own(&calls).expect("status write");
    assert_status_write(write);
    let status = status_of(write);
    assert_eq!(status.phase, Some(RolloutPhase::Degraded));
    assert_eq!(status.canary_weight, 20, "no traffic moved");
    let message = status.message.unwrap_or_default();
    assert!(
        message.contains(
            "spec.strategy.canary.trafficRouting.gatewayAPI.httpRoute: HTTPRoute web does not exist; no traffic moves until it does"
        ),
        "{message}"
    );
}

#[tokio::test]
async fn a_malformed_router_object_holds_the_rollout_with_what_is_wrong() {
    let (status, mut cluster) = in_flight(1, 20);
    cluster.route = Some(json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "web", "namespace": NS},
        "spec": {"rules": [{"backendRefs": [{"name": "web-stable", "port": 80, "weight": 100}]}]}
    }));
    let (result, calls, _) = reconcile_rollout(rollout(true, Some(status)), cluster).await;
    assert_eq!(result, Ok(Action::requeue(Duration::from_secs(20))));
    assert_held(&calls);
    let message = status_of(last_own(&calls).expect("status write"))
        .message
        .unwrap_or_default();
    assert!(
        message.contains(
            r#"spec.strategy.canary.trafficRouting.gatewayAPI.httpRoute: HTTPRoute web: spec.rules[0] has a backendRef to "web-stable" but none to "web-canary""#
        ),
        "{message}"
    );
}

#[tokio::test]
async fn a_foreign_edit_of_the_weight_is_put_back_and_reported_in_an_event() {
    let (status, mut cluster) = in_flight(1, 20);
    cluster.route = Some(route(50, 50));
    let (result, calls, _) = reconcile_rollout(rollout(true, Some(status)), cluster).await;
    result.expect("reconciled");
    let calls_lines = lines(&calls);
    assert_eq!(calls_lines[..1], reads()[..], "{calls_lines:#?}");
    // Weight decreases go first: the route is put back before anything else.
    assert_eq!(
        calls_lines[1..3],
        [format!("GET {ROUTE}"), format!("PATCH {ROUTE}")],
        "{calls_lines:#?}"
    );
    assert_eq!(
        calls[2].body,
        json!([
            {"op": "test", "path": "/spec/rules/0/backendRefs/0/name", "value": "web-stable"},
            {"op": "test", "path": "/spec/rules/0/backendRefs/0/weight", "value": 50},
            {"op": "replace", "path": "/spec/rules/0/backendRefs/0/weight", "value": 80},
            {"op": "test", "path": "/spec/rules/0/backendRefs/1/name", "value": "web-canary"},
            {"op": "test", "path": "/spec/rules/0/backendRefs/1/weight", "value": 50},
            {"op": "replace", "path": "/spec/rules/0/backendRefs/1/weight", "value": 20},
        ])
    );
    let put_back = calls
        .iter()
        .find(|c| c.path == EVENTS && c.body["reason"] == json!("TrafficWeightRestored"))
        .expect("a put-back event");
    assert_eq!(put_back.body["type"], json!("Warning"));
    assert_eq!(
        put_back.body["note"],
        json!("the router reports canary weight 50, but vigil set 20 and owns it: setting 20 back")
    );
    assert_eq!(
        status_of(last_own(&calls).expect("status")).canary_weight,
        20
    );
}

#[tokio::test]
async fn deleting_a_rollout_whose_router_object_is_gone_still_returns_the_services() {
    let (status, mut cluster) = in_flight(1, 20);
    cluster.route = None;
    let mut r = rollout(true, Some(status));
    r.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now()));
    let (result, calls, _) = reconcile_rollout(r, cluster).await;
    assert_eq!(result, Ok(Action::await_change()));
    assert_eq!(
        lines(&calls),
        vec![
            format!("GET {ROUTE}"),
            format!("PATCH {STABLE_SVC}"),
            format!("PATCH {CANARY_SVC}"),
            "PATCH /apis/vigil.dev/v1alpha1/namespaces/shop/rollouts/web".to_owned(),
        ]
    );
}

#[tokio::test]
async fn a_header_route_step_adds_the_rule_first_with_a_guarded_patch_once_the_canary_is_ready() {
    let (status, cluster) = in_flight(0, 0);
    let mut r = rollout(true, Some(status));
    let canary = &mut r.spec.strategy.canary;
    canary.steps = serde_json::from_value(json!([
        {"setHeaderRoute": {"name": "testers",
            "match": [{"headerName": "x-canary", "headerValue": {"prefix": "yes"}}]}},
        {"pause": {}}
    ]))
    .expect("steps");
    if let Some(routing) = canary.traffic_routing.as_mut() {
        routing.managed_routes = vec![crate::api::ManagedRoute {
            name: "testers".into(),
        }];
    }
    let original = cluster.route.clone().expect("route");
    let (result, calls, _) = reconcile_rollout(r, cluster).await;
    result.expect("reconciled");
    let calls_lines = lines(&calls);
    assert_eq!(
        calls_lines[..4],
        [
            // The weight, then the managed routes, read back.
            format!("GET {ROUTE}"),
            format!("GET {ROUTE}"),
            // SetHeaderRoute reads the route it patches, then patches it.
            format!("GET {ROUTE}"),
            format!("PATCH {ROUTE}"),
        ],
        "{calls_lines:#?}"
    );
    let patch = &calls[3];
    assert_eq!(patch.content_type, "application/json-patch+json");
    assert!(patch.query_has("fieldManager=vigil.dev%2Fcontroller"));
    let annotation = r#"{"header":[{"name":"testers","matches":[{"headerName":"x-canary","value":{"prefix":"yes"}}]}],"mirror":[]}"#;
    assert_eq!(
        patch.body,
        json!([
            {"op": "test", "path": "/spec/rules", "value": original["spec"]["rules"]},
            {"op": "add", "path": "/spec/rules/0", "value": {
                "name": "vigil-header-testers",
                "matches": [{"headers": [{"type": "RegularExpression", "name": "x-canary", "value": "yes.*"}]}],
                "backendRefs": [{"name": "web-canary", "port": 80, "weight": 1}]
            }},
            {"op": "add", "path": "/metadata/annotations", "value": {"vigil.dev/managed-routes": annotation}},
        ])
    );
    // The route is not read back yet: the step waits.
    let write = last_own(&calls).expect("status write");
    assert_status_write(write);
    assert_eq!(status_of(write).current_step_index, Some(0));
}

#[tokio::test]
async fn a_secret_argument_that_does_not_exist_holds_the_rollout_before_any_effect() {
    let (status, cluster) = in_flight(1, 20);
    let mut rollout = rollout(true, Some(status));
    if let Some(analysis) = rollout.spec.strategy.canary.steps[1].analysis.as_mut() {
        analysis.args = vec![
            serde_json::from_value(json!({"name": "tenant",
                "valueFrom": {"secretKeyRef": {"name": "tenant", "key": "id"}}}))
            .expect("arg"),
        ];
    }
    let (result, calls, _) = reconcile_rollout(rollout, cluster).await;
    result.expect("reconciled");
    let calls_lines = lines(&calls);
    // The Secret is checked in observe, right after the reads; nothing is created.
    let mut expected = reads();
    expected.push("GET /api/v1/namespaces/shop/secrets/tenant".to_owned());
    assert_eq!(calls_lines[..2], expected[..], "{calls_lines:#?}");
    assert!(
        calls_lines[2..]
            .iter()
            .all(|l| *l == format!("POST {EVENTS}") || *l == format!("PATCH {STATUS}")),
        "{calls_lines:#?}"
    );
    let write = last_own(&calls).expect("status write");
    assert_status_write(write);
    let message = status_of(write).message.unwrap_or_default();
    assert!(
        message.contains("failed to resolve argument tenant: secret \"tenant\" refused")
            && message.contains("vigil.dev/analysis-credential"),
        "{message}"
    );
}

#[tokio::test]
async fn without_template_caches_the_template_is_read_in_observe_not_while_acting() {
    let (status, cluster) = in_flight(1, 20);
    let (result, calls, _) = reconcile_with(rollout(true, Some(status)), cluster, false).await;
    result.expect("reconciled");
    let calls_lines = lines(&calls);
    let mut expected = reads();
    expected
        .push("GET /apis/vigil.dev/v1alpha1/namespaces/shop/analysistemplates/error-rate".into());
    expected.push(format!("POST {RUNS}"));
    assert_eq!(calls_lines[..3], expected[..], "{calls_lines:#?}");
}

/// The Rollout `web` adopting the Deployment `web` (`scaleDown: progressively`).
fn adopting_rollout(status: Option<RolloutStatus>) -> Rollout {
    let mut rollout = rollout(false, status);
    rollout.spec.template = None;
    rollout.spec.workload_ref = Some(crate::api::WorkloadRef {
        api_version: "apps/v1".into(),
        kind: "Deployment".into(),
        name: "web".into(),
        scale_down: Some(crate::api::ScaleDown::Progressively),
    });
    rollout
}

fn deployment(image: &str, replicas: i32) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": NS, "resourceVersion": "12"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                 "template": serde_json::to_value(image_template(image)).unwrap_or_default()}
    })
}

/// Services selecting `app: web` only: the Deployment's pods and the Rollout's alike.
fn unpointed_services() -> BTreeMap<String, Value> {
    ["web-stable", "web-canary"]
        .into_iter()
        .map(|name| {
            (
                name.to_owned(),
                json!({"metadata": {"name": name}, "spec": {"selector": {"app": "web"}}}),
            )
        })
        .collect()
}

#[tokio::test]
async fn adopting_a_deployment_creates_the_revision_from_its_template_and_leaves_it_serving() {
    let revision = template_hash(&image_template("web:1"));
    let cluster = Cluster {
        services: unpointed_services(),
        deployment: Some(deployment("web:1", 4)),
        ..Cluster::default()
    };
    let (result, calls, _) = reconcile_rollout(adopting_rollout(None), cluster).await;
    result.expect("reconciled");
    assert_eq!(
        lines(&calls),
        vec![
            // The stable service still selects the Deployment's pods: not moved yet.
            format!("POST {RS}"),
            format!("PATCH {CANARY_SVC}"),
            format!("PATCH {STATUS}"),
            format!("POST {EVENTS}"),
        ],
        "{calls:#?}"
    );
    let created = &calls[0].body;
    assert_eq!(
        created["metadata"]["name"],
        json!(format!("web-{revision}"))
    );
    assert_eq!(
        created["spec"]["template"]["spec"]["containers"][0]["image"],
        json!("web:1"),
        "the Deployment's template"
    );
    assert_eq!(created["spec"]["replicas"], json!(4));
    let status = status_of(&calls[2]);
    assert_eq!(status.stable_revision.as_deref(), Some(revision.as_str()));
}

#[tokio::test]
async fn the_deployment_is_scaled_down_by_the_ready_pods_with_a_guarded_patch() {
    let revision = template_hash(&image_template("web:1"));
    let status = RolloutStatus {
        stable_revision: Some(revision.clone()),
        current_step_index: Some(3),
        ..RolloutStatus::default()
    };
    let cluster = Cluster {
        replica_sets: vec![replica_set(&revision, 4, 3)],
        services: unpointed_services(),
        deployment: Some(deployment("web:1", 4)),
        ..Cluster::default()
    };
    let (result, calls, _) = reconcile_rollout(adopting_rollout(Some(status)), cluster).await;
    result.expect("reconciled");
    assert_eq!(
        lines(&calls),
        vec![
            format!("PATCH {CANARY_SVC}"),
            format!("PATCH {DEPLOYMENT}"),
            format!("PATCH {STATUS}"),
        ],
        "{calls:#?}"
    );
    let patch = &calls[1];
    assert_eq!(patch.content_type, "application/json-patch+json");
    assert!(patch.query_has("fieldManager=vigil.dev%2Fcontroller"));
    assert_eq!(
        patch.body,
        json!([
            {"op": "test", "path": "/spec/replicas", "value": 4},
            {"op": "replace", "path": "/spec/replicas", "value": 1}
        ]),
        "4 wanted, 3 Rollout pods ready: the Deployment keeps 1, and only if it still has 4"
    );
}

#[tokio::test]
async fn a_deployment_scaled_meanwhile_fails_the_guarded_patch_and_records_nothing() {
    let revision = template_hash(&image_template("web:1"));
    let status = RolloutStatus {
        stable_revision: Some(revision.clone()),
        current_step_index: Some(3),
        ..RolloutStatus::default()
    };
    let cluster = Cluster {
        replica_sets: vec![replica_set(&revision, 4, 3)],
        services: unpointed_services(),
        deployment: Some(deployment("web:1", 4)),
        deployment_changed: true,
        ..Cluster::default()
    };
    let (result, calls, _) = reconcile_rollout(adopting_rollout(Some(status)), cluster).await;
    let error = result.expect_err("the patch failed");
    assert!(error.starts_with("scale_down_deployment:"), "{error}");
    assert!(error.contains("Deployment web"), "{error}");
    assert_eq!(
        last_own(&calls).map(Call::line),
        Some(format!("PATCH {DEPLOYMENT}")),
        "no status write after a failed effect: the change wakes the Rollout, which reads the new copy"
    );
}

#[tokio::test]
async fn a_missing_deployment_holds_the_rollout_with_the_reason_and_creates_nothing() {
    let (result, calls, _) = reconcile_rollout(adopting_rollout(None), Cluster::default()).await;
    result.expect("reconciled");
    let writes: Vec<String> = lines(&calls)
        .into_iter()
        .filter(|line| !line.starts_with("GET") && line != &format!("POST {EVENTS}"))
        .collect();
    assert_eq!(writes, vec![format!("PATCH {STATUS}")], "{calls:#?}");
    let status = status_of(last_own(&calls).expect("a call"));
    assert_eq!(status.phase, Some(RolloutPhase::Degraded));
    let message = status.message.unwrap_or_default();
    assert!(
        message.contains(
            "spec.workloadRef.name: Deployment \"web\" does not exist in namespace \"shop\""
        ),
        "{message}"
    );
}

#[path = "istio_tests.rs"]
mod istio;

#[path = "scaling_tests.rs"]
mod scaling;

#[path = "baseline_tests.rs"]
mod baseline;

#[path = "run_history_tests.rs"]
mod run_history;

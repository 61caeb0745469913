//! End to end, per router (NGINX Ingress, SMI TrafficSplit, Traefik TraefikService): the real
//! `vigil controller --no-leader-election` binary against the in-process Kubernetes API test
//! server (which serves Ingresses and schema-less TrafficSplit and TraefikService CRDs), with
//! router objects shaped like each project's documented ones. Each test takes one Rollout
//! through: the weights at a step, back to stable after promotion, a foreign edit of an owned
//! field put back (with an Event), back to stable after an abort, and the object missing (the
//! Rollout holds with the field named, no traffic moves).

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use vigil::api::{Rollout, RolloutPhase};
use vigil::testing::apiserver::ApiServer;

const NS: &str = "default";
const WAIT: Duration = Duration::from_secs(90);

/// The controller binary, killed on drop.
struct Controller(Child);

impl Controller {
    fn start(kubeconfig: &Path) -> Controller {
        let child = Command::new(env!("CARGO_BIN_EXE_vigil"))
            .args([
                "controller",
                "--no-leader-election",
                "--metrics-addr",
                "127.0.0.1:0",
            ])
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "warn,kube=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start vigil controller");
        Controller(child)
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One cluster, one controller, one Rollout `web` with Services `web-stable`/`web-canary`.
struct Harness {
    _server: ApiServer,
    _dir: tempfile::TempDir,
    _controller: Option<Controller>,
    client: kube::Client,
    rollouts: Api<Rollout>,
}

impl Harness {
    async fn start() -> Harness {
        support::install_crypto_provider();
        let server = ApiServer::start().with_replicaset_controller();
        let dir = tempfile::tempdir().expect("temp dir");
        server
            .write_kubeconfig(&dir.path().join("kubeconfig"))
            .expect("kubeconfig");
        let client = server.client();
        let services: Api<Service> = Api::namespaced(client.clone(), NS);
        for name in ["web", "web-stable", "web-canary"] {
            let service: Service = serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": NS},
                "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}
            }))
            .expect("service");
            services
                .create(&PostParams::default(), &service)
                .await
                .expect("create service");
        }
        Harness {
            rollouts: Api::namespaced(client.clone(), NS),
            client,
            _server: server,
            _dir: dir,
            _controller: None,
        }
    }

    fn api(&self, resource: &ApiResource) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), NS, resource)
    }

    async fn create(&self, resource: &ApiResource, object: Value) {
        let object: DynamicObject = serde_json::from_value(object).expect("object");
        self.api(resource)
            .create(&PostParams::default(), &object)
            .await
            .expect("create router object");
    }

    async fn get(&self, resource: &ApiResource, name: &str) -> Option<Value> {
        self.api(resource)
            .get_opt(name)
            .await
            .expect("get router object")
            .map(|o| serde_json::to_value(o).expect("json"))
    }

    /// Creates the Rollout with `routing` and starts the controller; returns the first stable
    /// revision once it is Healthy.
    async fn release_first(&mut self, routing: Value) -> String {
        self.release_first_with(routing, json!([{"setWeight": 30}, {"pause": {}}]))
            .await
    }

    /// [`Harness::release_first`] with these steps.
    async fn release_first_with(&mut self, routing: Value, steps: Value) -> String {
        let rollout: Rollout = serde_json::from_value(json!({
            "apiVersion": "vigil.dev/v1alpha1",
            "kind": "Rollout",
            "metadata": {"name": "web", "namespace": NS},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "template": template("app:1"),
                "strategy": {"canary": {
                    "stableService": "web-stable",
                    "canaryService": "web-canary",
                    "trafficRouting": routing,
                    "steps": steps
                }}
            }
        }))
        .expect("rollout");
        self.rollouts
            .create(&PostParams::default(), &rollout)
            .await
            .expect("create rollout");
        self._controller = Some(Controller::start(&self._dir.path().join("kubeconfig")));
        self.wait_for("app:1 Healthy", |r| phase(r) == Some(RolloutPhase::Healthy))
            .await
            .status
            .and_then(|s| s.stable_revision)
            .expect("stable revision")
    }

    async fn set_image(&self, image: &str) {
        self.rollouts
            .patch(
                "web",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"template": template(image)}})),
            )
            .await
            .expect("new image");
    }

    /// Writes a request into status (`promoteStep`, `abort`) as the CLI does.
    async fn request(&self, status: Value) {
        let rollout = self.rollouts.get("web").await.expect("get rollout");
        self.rollouts
            .patch_status(
                "web",
                &PatchParams::default(),
                &Patch::Merge(json!({
                    "metadata": {"resourceVersion": rollout.metadata.resource_version},
                    "status": status
                })),
            )
            .await
            .expect("request");
    }

    /// Makes the controller look at the Rollout now (router objects are not watched). A
    /// Rollout already gone (the finalizer test) has nothing to nudge.
    async fn nudge(&self, n: u32) {
        let _ = self
            .rollouts
            .patch(
                "web",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {"test/nudge": n.to_string()}}})),
            )
            .await;
    }

    async fn wait_for(&self, what: &str, check: impl Fn(&Rollout) -> bool) -> Rollout {
        let deadline = Instant::now() + WAIT;
        loop {
            let rollout = self.rollouts.get("web").await.expect("get rollout");
            if check(&rollout) {
                return rollout;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; status: {:#?}",
                rollout.status
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until `read` (of the router object) gives `want`, nudging the Rollout every few
    /// seconds so an edit of a router object is seen without waiting for the resync.
    async fn wait_router<T: PartialEq + std::fmt::Debug>(
        &self,
        what: &str,
        want: T,
        read: impl AsyncFn() -> T,
    ) {
        let deadline = Instant::now() + WAIT;
        let mut nudges = 0;
        let mut next_nudge = Instant::now() + Duration::from_secs(3);
        loop {
            let seen = read().await;
            if seen == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: want {want:?}, seen {seen:?}"
            );
            if Instant::now() > next_nudge {
                nudges += 1;
                self.nudge(nudges).await;
                next_nudge = Instant::now() + Duration::from_secs(3);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Promotes the paused canary and waits until it is the stable.
    async fn promote(&self, old_stable: &str) -> String {
        self.request(json!({"promoteStep": 1})).await;
        self.wait_for("the canary promoted", |r| {
            phase(r) == Some(RolloutPhase::Healthy)
                && r.status.as_ref().and_then(|s| s.stable_revision.as_deref()) != Some(old_stable)
        })
        .await
        .status
        .and_then(|s| s.stable_revision)
        .expect("stable revision")
    }

    /// Waits until an Event with this reason was written (events are written after the
    /// effect they report).
    async fn wait_event(&self, reason: &str) {
        let events: Api<k8s_openapi::api::events::v1::Event> =
            Api::namespaced(self.client.clone(), NS);
        let deadline = Instant::now() + WAIT;
        loop {
            let found = events
                .list(&Default::default())
                .await
                .expect("list events")
                .items
                .iter()
                .any(|e| e.reason.as_deref() == Some(reason));
            if found {
                return;
            }
            assert!(Instant::now() < deadline, "no {reason} event");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn paused(&self) -> Rollout {
        self.wait_for("the pause at 30%", |r| {
            phase(r) == Some(RolloutPhase::Paused)
        })
        .await
    }

    /// Waits until the Rollout's status message mentions `text` (a hold naming the field).
    async fn held_with(&self, text: &str) -> Rollout {
        self.wait_for(&format!("a hold saying {text:?}"), |r| {
            let status = r.status.as_ref();
            let message = status.and_then(|s| s.message.clone()).unwrap_or_default();
            let conditions = status
                .map(|s| serde_json::to_string(&s.conditions).unwrap_or_default())
                .unwrap_or_default();
            message.contains(text) || conditions.contains(text)
        })
        .await
    }
}

fn template(image: &str) -> Value {
    json!({
        "metadata": {"labels": {"app": "web"}},
        "spec": {"containers": [{"name": "app", "image": image}]}
    })
}

fn phase(rollout: &Rollout) -> Option<RolloutPhase> {
    rollout.status.as_ref().and_then(|s| s.phase)
}

fn ingress_resource() -> ApiResource {
    vigil::traffic::nginx::ingress_resource()
}

const CANARY_INGRESS: &str = "web-web-canary";
const WEIGHT: &str = "nginx.ingress.kubernetes.io/canary-weight";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_a_canary_ingress_follows_the_steps_and_goes_at_the_end_of_each_release() {
    let mut h = Harness::start().await;
    let stable_ingress = json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": "web", "namespace": NS,
                     "annotations": {"kubernetes.io/ingress.class": "nginx"}},
        "spec": {"rules": [{"host": "web.example", "http": {"paths": [
            {"path": "/", "pathType": "Prefix",
             "backend": {"service": {"name": "web-stable", "port": {"number": 80}}}}
        ]}}]}
    });
    h.create(&ingress_resource(), stable_ingress.clone()).await;
    let v1 = h
        .release_first(json!({"nginx": {
            "stableIngress": "web",
            "additionalIngressAnnotations": {"canary-by-cookie": "beta"}
        }}))
        .await;
    assert_eq!(h.get(&ingress_resource(), CANARY_INGRESS).await, None);
    let weight = async || {
        h.get(&ingress_resource(), CANARY_INGRESS)
            .await
            .map(|i| i["metadata"]["annotations"][WEIGHT].clone())
    };

    // A step: the canary Ingress appears with the weight, owned by the Rollout.
    h.set_image("app:2").await;
    h.paused().await;
    let canary = h
        .get(&ingress_resource(), CANARY_INGRESS)
        .await
        .expect("canary Ingress");
    assert_eq!(canary["metadata"]["annotations"][WEIGHT], json!("30"));
    assert_eq!(
        canary["metadata"]["annotations"]["nginx.ingress.kubernetes.io/canary"],
        json!("true")
    );
    assert_eq!(
        canary["metadata"]["annotations"]["nginx.ingress.kubernetes.io/canary-by-cookie"],
        json!("beta")
    );
    assert_eq!(
        canary["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"],
        json!("web-canary")
    );
    assert_eq!(
        canary["metadata"]["ownerReferences"][0]["kind"],
        json!("Rollout")
    );

    // A foreign edit of the weight is put back, and said so.
    h.api(&ingress_resource())
        .patch(
            CANARY_INGRESS,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {WEIGHT: "90"}}})),
        )
        .await
        .expect("foreign edit");
    h.wait_router("the weight put back", Some(json!("30")), weight)
        .await;
    h.wait_event("TrafficWeightRestored").await;

    // Promotion: the canary Ingress is gone.
    let v2 = h.promote(&v1).await;
    h.wait_router("no canary Ingress after promotion", None, weight)
        .await;

    // A release aborted: the canary Ingress is gone too.
    h.set_image("app:3").await;
    h.paused().await;
    assert_eq!(weight().await, Some(json!("30")));
    h.request(json!({"abort": true})).await;
    h.wait_router("no canary Ingress after the abort", None, weight)
        .await;
    let aborted = h
        .wait_for("the abort", |r| phase(r) == Some(RolloutPhase::Aborted))
        .await;
    assert_eq!(
        aborted.status.and_then(|s| s.stable_revision).as_deref(),
        Some(v2.as_str())
    );

    // The stable Ingress missing: the next release holds, naming the field; nothing is made.
    h.api(&ingress_resource())
        .delete("web", &Default::default())
        .await
        .expect("delete the stable Ingress");
    h.set_image("app:4").await;
    h.held_with("trafficRouting.nginx.stableIngress").await;
    assert_eq!(weight().await, None);
}

/// `setHeaderRoute` through NGINX: at weight 0 the canary Ingress exists only for the header
/// (`canary-by-header`/`-value`, weight "0"); it is gone after promotion and after an abort.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_a_header_route_makes_a_weight_zero_canary_ingress_until_the_release_ends() {
    let mut h = Harness::start().await;
    h.create(
        &ingress_resource(),
        json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": {"name": "web", "namespace": NS},
            "spec": {"ingressClassName": "nginx", "rules": [{"http": {"paths": [
                {"path": "/", "pathType": "Prefix",
                 "backend": {"service": {"name": "web-stable", "port": {"number": 80}}}}
            ]}}]}
        }),
    )
    .await;
    let v1 = h
        .release_first_with(
            json!({"nginx": {"stableIngress": "web"}, "managedRoutes": [{"name": "testers"}]}),
            json!([
                {"setHeaderRoute": {"name": "testers",
                    "match": [{"headerName": "x-canary", "headerValue": {"exact": "yes"}}]}},
                {"pause": {}}
            ]),
        )
        .await;
    let header = async || {
        h.get(&ingress_resource(), CANARY_INGRESS).await.map(|i| {
            let a = &i["metadata"]["annotations"];
            (
                a[WEIGHT].clone(),
                a["nginx.ingress.kubernetes.io/canary-by-header"].clone(),
                a["nginx.ingress.kubernetes.io/canary-by-header-value"].clone(),
            )
        })
    };
    let testers = Some((json!("0"), json!("x-canary"), json!("yes")));
    h.set_image("app:2").await;
    h.paused().await;
    assert_eq!(header().await, testers);
    h.promote(&v1).await;
    h.wait_router("no canary Ingress after promotion", None, header)
        .await;

    h.set_image("app:3").await;
    h.paused().await;
    assert_eq!(header().await, testers);
    h.request(json!({"abort": true})).await;
    h.wait_router("no canary Ingress after the abort", None, header)
        .await;
}

fn split_resource() -> ApiResource {
    vigil::traffic::smi::traffic_split_resource()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smi_a_traffic_split_is_created_owned_and_returned_to_stable() {
    let mut h = Harness::start().await;
    let v1 = h
        .release_first(json!({"smi": {"rootService": "web"}}))
        .await;
    let weights = async || {
        h.get(&split_resource(), "web").await.map(|s| {
            let backends = &s["spec"]["backends"];
            (
                s["spec"]["service"].clone(),
                backends[0]["weight"].clone(),
                backends[1]["weight"].clone(),
            )
        })
    };
    let at = |stable: i64, canary: i64| Some((json!("web"), json!(stable), json!(canary)));

    h.set_image("app:2").await;
    h.paused().await;
    assert_eq!(weights().await, at(70, 30));
    let split = h.get(&split_resource(), "web").await.expect("split");
    assert_eq!(split["apiVersion"], json!("split.smi-spec.io/v1alpha2"));
    assert_eq!(split["spec"]["backends"][0]["service"], json!("web-stable"));
    assert_eq!(split["spec"]["backends"][1]["service"], json!("web-canary"));
    assert_eq!(
        split["metadata"]["ownerReferences"][0]["kind"],
        json!("Rollout")
    );

    // Foreign edits are put back: of the weights (with an Event), of the root service.
    for edit in [
        json!({"spec": {"backends": [
            {"service": "web-stable", "weight": 42},
            {"service": "web-canary", "weight": 58}
        ]}}),
        json!({"spec": {"service": "elsewhere"}}),
    ] {
        h.api(&split_resource())
            .patch("web", &PatchParams::default(), &Patch::Merge(edit))
            .await
            .expect("foreign edit");
        h.wait_router("the split put back", at(70, 30), weights)
            .await;
    }
    h.wait_event("TrafficWeightRestored").await;

    let _v2 = h.promote(&v1).await;
    h.wait_router("all to stable after promotion", at(100, 0), weights)
        .await;

    h.set_image("app:3").await;
    h.paused().await;
    assert_eq!(weights().await, at(70, 30));
    h.request(json!({"abort": true})).await;
    h.wait_router("all to stable after the abort", at(100, 0), weights)
        .await;

    // A TrafficSplit of that name held by someone else: the next release holds.
    h.api(&split_resource())
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"ownerReferences": null}})),
        )
        .await
        .expect("disown");
    h.set_image("app:4").await;
    h.held_with("trafficRouting.smi").await;
    assert_eq!(weights().await, at(100, 0));
}

fn traefik_resource() -> ApiResource {
    vigil::traffic::traefik::traefik_service_resource()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traefik_weights_move_on_the_weighted_service_and_come_back() {
    let mut h = Harness::start().await;
    h.create(
        &traefik_resource(),
        json!({
            "apiVersion": "traefik.io/v1alpha1",
            "kind": "TraefikService",
            "metadata": {"name": "web", "namespace": NS},
            "spec": {"weighted": {"services": [
                {"name": "web-stable", "port": 80},
                {"name": "web-canary", "port": 80}
            ]}}
        }),
    )
    .await;
    let v1 = h
        .release_first(json!({"traefik": {"weightedTraefikServiceName": "web"}}))
        .await;
    let weights = async || {
        h.get(&traefik_resource(), "web").await.map(|t| {
            let services = &t["spec"]["weighted"]["services"];
            (services[0]["weight"].clone(), services[1]["weight"].clone())
        })
    };
    let at = |stable: i64, canary: i64| Some((json!(stable), json!(canary)));
    h.wait_router("weights written at the first release", at(100, 0), weights)
        .await;

    h.set_image("app:2").await;
    h.paused().await;
    assert_eq!(weights().await, at(70, 30));

    h.api(&traefik_resource())
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Json::<()>(
                serde_json::from_value(json!([
                    {"op": "replace", "path": "/spec/weighted/services/1/weight", "value": 95}
                ]))
                .expect("patch"),
            ),
        )
        .await
        .expect("foreign edit");
    h.wait_router("the weights put back", at(70, 30), weights)
        .await;

    let _v2 = h.promote(&v1).await;
    h.wait_router("all to stable after promotion", at(100, 0), weights)
        .await;

    h.set_image("app:3").await;
    h.paused().await;
    h.request(json!({"abort": true})).await;
    h.wait_router("all to stable after the abort", at(100, 0), weights)
        .await;

    h.api(&traefik_resource())
        .delete("web", &Default::default())
        .await
        .expect("delete the TraefikService");
    h.set_image("app:4").await;
    h.held_with("trafficRouting.traefik.weightedTraefikServiceName")
        .await;
}

/// The finalizer: a Rollout deleted mid-release first returns all traffic to the stable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traefik_a_rollout_deleted_mid_release_returns_all_traffic_to_stable() {
    let mut h = Harness::start().await;
    h.create(
        &traefik_resource(),
        json!({
            "apiVersion": "traefik.io/v1alpha1",
            "kind": "TraefikService",
            "metadata": {"name": "web", "namespace": NS},
            "spec": {"weighted": {"services": [
                {"name": "web-stable", "port": 80, "weight": 100},
                {"name": "web-canary", "port": 80, "weight": 0}
            ]}}
        }),
    )
    .await;
    h.release_first(json!({"traefik": {"weightedTraefikServiceName": "web"}}))
        .await;
    h.set_image("app:2").await;
    h.paused().await;
    let weights = async || {
        h.get(&traefik_resource(), "web").await.map(|t| {
            let services = &t["spec"]["weighted"]["services"];
            (services[0]["weight"].clone(), services[1]["weight"].clone())
        })
    };
    assert_eq!(weights().await, Some((json!(70), json!(30))));
    h.rollouts
        .delete("web", &Default::default())
        .await
        .expect("delete the rollout");
    h.wait_router(
        "all to stable before the Rollout goes",
        Some((json!(100), json!(0))),
        weights,
    )
    .await;
    let deadline = Instant::now() + WAIT;
    while h.rollouts.get_opt("web").await.expect("get").is_some() {
        assert!(Instant::now() < deadline, "the finalizer never finished");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

//! The Istio router's API calls in one reconcile, against the mocked API server of
//! [`super`]: the exact patches for host- and subset-level splitting, several
//! VirtualServices, a foreign edit, a malformed object.

use super::*;
use crate::api::istio::{IstioDestinationRule, IstioRouting, IstioVirtualService};

const VS: &str = "/apis/networking.istio.io/v1/namespaces/shop/virtualservices";
const DR: &str = "/apis/networking.istio.io/v1/namespaces/shop/destinationrules/web";

/// A cluster with Istio objects besides what [`Cluster`] answers.
#[derive(Clone)]
struct IstioCluster {
    base: Cluster,
    virtual_services: BTreeMap<String, Value>,
    destination_rule: Option<Value>,
}

impl IstioCluster {
    fn responder(self) -> Responder {
        let base = self.base.clone().responder();
        Arc::new(move |call: &Call| {
            let path = call.path.as_str();
            let name = path.rsplit('/').next().unwrap_or("");
            if path.starts_with(VS) {
                return self
                    .virtual_services
                    .get(name)
                    .cloned()
                    .map_or_else(|| not_found(path), |v| (200, v));
            }
            if path == DR {
                return self
                    .destination_rule
                    .clone()
                    .map_or_else(|| not_found(path), |v| (200, v));
            }
            base(call)
        })
    }
}

async fn reconcile_istio(
    rollout: Rollout,
    cluster: IstioCluster,
) -> (Result<Action, String>, Vec<Call>) {
    let templates = template_index(&cluster.base.templates);
    let cluster_base = cluster.base.clone();
    let (client, verifier) = ApiServerVerifier::start(cluster.responder());
    let mut ctx = plain_context(client);
    ctx.templates = Some(templates);
    ctx.caches = caches_of(&cluster_base);
    let result = tokio::time::timeout(
        Duration::from_secs(10),
        rollout_controller::reconcile(Arc::new(rollout), Arc::new(ctx)),
    )
    .await
    .expect("reconcile finishes")
    .map_err(|e| format!("{}: {e}", e.category()));
    (result, verifier.finish().await)
}

fn istio_rollout(istio: IstioRouting, services: bool, status: Option<RolloutStatus>) -> Rollout {
    let mut r = rollout(false, status);
    let canary = &mut r.spec.strategy.canary;
    if !services {
        canary.stable_service = None;
        canary.canary_service = None;
    }
    canary.traffic_routing = Some(TrafficRouting {
        istio: Some(istio),
        ..TrafficRouting::default()
    });
    r
}

fn one(name: &str, routes: &[&str]) -> IstioVirtualService {
    IstioVirtualService {
        name: name.into(),
        routes: routes.iter().map(|r| (*r).to_owned()).collect(),
    }
}

fn host_vs(name: &str, stable: i64, canary: i64) -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": name, "namespace": NS, "resourceVersion": "5"},
        "spec": {"hosts": ["web"], "http": [
            {"name": "primary", "route": [
                {"destination": {"host": "web-stable"}, "weight": stable},
                {"destination": {"host": "web-canary.shop.svc.cluster.local"}, "weight": canary}
            ]}
        ]}
    })
}

fn subset_vs(stable: i64, canary: i64) -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "web", "namespace": NS, "resourceVersion": "5"},
        "spec": {"hosts": ["web"], "http": [{"route": [
            {"destination": {"host": "web", "subset": "stable"}, "weight": stable},
            {"destination": {"host": "web", "subset": "canary"}, "weight": canary}
        ]}]}
    })
}

fn rule(stable: &str, canary: &str) -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
        "metadata": {"name": "web", "namespace": NS, "resourceVersion": "6"},
        "spec": {"host": "web", "subsets": [
            {"name": "stable", "labels": {"app": "web", REVISION_LABEL: stable}},
            {"name": "canary", "labels": {"app": "web", REVISION_LABEL: canary}}
        ]}
    })
}

fn host_cluster(step: i32, weight: i32, names: &[&str]) -> (RolloutStatus, IstioCluster) {
    let (status, mut base) = in_flight(step, weight);
    base.route = None;
    let virtual_services = names
        .iter()
        .map(|n| {
            (
                (*n).to_owned(),
                host_vs(n, i64::from(100 - weight), i64::from(weight)),
            )
        })
        .collect();
    (
        status,
        IstioCluster {
            base,
            virtual_services,
            destination_rule: None,
        },
    )
}

fn patches_of<'a>(calls: &'a [Call], prefix: &str) -> Vec<&'a Call> {
    calls
        .iter()
        .filter(|c| c.method == "PATCH" && c.path.starts_with(prefix))
        .collect()
}

fn host_weight_patch(stable_from: i64, canary_from: i64, canary_to: i64) -> Value {
    json!([
        {"op": "test", "path": "/spec/http/0/name", "value": "primary"},
        {"op": "test", "path": "/spec/http/0/route/0/destination/host", "value": "web-stable"},
        {"op": "test", "path": "/spec/http/0/route/0/weight", "value": stable_from},
        {"op": "replace", "path": "/spec/http/0/route/0/weight", "value": 100 - canary_to},
        {"op": "test", "path": "/spec/http/0/route/1/destination/host", "value": "web-canary.shop.svc.cluster.local"},
        {"op": "test", "path": "/spec/http/0/route/1/weight", "value": canary_from},
        {"op": "replace", "path": "/spec/http/0/route/1/weight", "value": canary_to},
    ])
}

#[tokio::test]
async fn host_level_a_set_weight_step_patches_only_the_destination_weights() {
    let (status, cluster) = host_cluster(0, 0, &["web"]);
    let istio = IstioRouting {
        virtual_service: Some(one("web", &["primary"])),
        ..IstioRouting::default()
    };
    let (result, calls) = reconcile_istio(istio_rollout(istio, true, Some(status)), cluster).await;
    result.expect("reconciled");
    let patches = patches_of(&calls, VS);
    assert_eq!(patches.len(), 1, "{:#?}", lines(&calls));
    let patch = patches[0];
    assert_eq!(patch.path, format!("{VS}/web"));
    assert_eq!(patch.content_type, "application/json-patch+json");
    assert!(
        patch.query_has("fieldManager=vigil.dev%2Fcontroller"),
        "{}",
        patch.query
    );
    assert_eq!(patch.body, host_weight_patch(100, 0, 20));
    // The VirtualService is read (observe) before it is patched; no DestinationRule.
    let first_get = lines(&calls)
        .iter()
        .position(|l| *l == format!("GET {VS}/web"))
        .expect("read");
    let patched_at = calls
        .iter()
        .position(|c| c.method == "PATCH" && c.path.starts_with(VS));
    assert!(patched_at.is_some_and(|p| p > first_get));
    assert!(!calls.iter().any(|c| c.path.contains("destinationrules")));
    let write = last_own(&calls).expect("status write");
    assert_status_write(write);
    assert_eq!(status_of(write).canary_weight, 20);
}

#[tokio::test]
async fn several_virtual_services_are_each_patched() {
    let (status, cluster) = host_cluster(0, 0, &["web-public", "web-mesh"]);
    let istio = IstioRouting {
        virtual_services: vec![one("web-public", &["primary"]), one("web-mesh", &[])],
        ..IstioRouting::default()
    };
    let (result, calls) = reconcile_istio(istio_rollout(istio, true, Some(status)), cluster).await;
    result.expect("reconciled");
    let patches = patches_of(&calls, VS);
    let paths: Vec<&str> = patches.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(
        paths,
        [format!("{VS}/web-public"), format!("{VS}/web-mesh")],
        "{:#?}",
        lines(&calls)
    );
    assert_eq!(patches[0].body, host_weight_patch(100, 0, 20));
    // Not named in the Rollout: the route's name is not tested.
    let mut unnamed = host_weight_patch(100, 0, 20);
    unnamed.as_array_mut().expect("ops").remove(0);
    assert_eq!(patches[1].body, unnamed);
}

#[tokio::test]
async fn a_foreign_edit_of_a_weight_is_put_back_with_an_event() {
    // vigil set 20 (status), someone put the VirtualService back to 0.
    let (status, mut cluster) = host_cluster(1, 20, &["web"]);
    cluster
        .virtual_services
        .insert("web".into(), host_vs("web", 100, 0));
    let istio = IstioRouting {
        virtual_service: Some(one("web", &["primary"])),
        ..IstioRouting::default()
    };
    let (result, calls) = reconcile_istio(istio_rollout(istio, true, Some(status)), cluster).await;
    result.expect("reconciled");
    let patches = patches_of(&calls, VS);
    assert_eq!(patches.len(), 1, "{:#?}", lines(&calls));
    assert_eq!(patches[0].body, host_weight_patch(100, 0, 20));
    let reasons: Vec<&Value> = calls
        .iter()
        .filter(|c| c.path == EVENTS)
        .map(|c| &c.body["reason"])
        .collect();
    assert!(
        reasons.contains(&&json!("TrafficWeightRestored")),
        "{reasons:?}"
    );
}

#[tokio::test]
async fn a_malformed_virtual_service_holds_with_the_field_named_and_moves_nothing() {
    let (status, mut cluster) = host_cluster(0, 0, &["web"]);
    let mut broken = host_vs("web", 100, 0);
    broken["spec"]["http"][0]["route"][1]["weight"] = json!("zero");
    cluster.virtual_services.insert("web".into(), broken);
    let istio = IstioRouting {
        virtual_service: Some(one("web", &["primary"])),
        ..IstioRouting::default()
    };
    let (result, calls) = reconcile_istio(istio_rollout(istio, true, Some(status)), cluster).await;
    result.expect("reconciled");
    assert!(
        calls
            .iter()
            .all(|c| c.method == "GET" || c.path == EVENTS || c.path == STATUS),
        "{:#?}",
        lines(&calls)
    );
    let status = status_of(last_own(&calls).expect("status write"));
    let message = status.message.unwrap_or_default();
    assert!(
        message.contains("spec.strategy.canary.trafficRouting.istio.virtualService.name")
            && message
                .contains("VirtualService web: spec.http[0].route[1].weight: not a whole number"),
        "{message}"
    );
}

#[tokio::test]
async fn a_missing_destination_rule_holds_with_its_field_named() {
    let (status, base) = in_flight(0, 0);
    let cluster = IstioCluster {
        base,
        virtual_services: BTreeMap::from([("web".into(), subset_vs(100, 0))]),
        destination_rule: None,
    };
    let istio = IstioRouting {
        virtual_service: Some(one("web", &[])),
        destination_rule: Some(IstioDestinationRule {
            name: "web".into(),
            canary_subset_name: "canary".into(),
            stable_subset_name: "stable".into(),
        }),
        ..IstioRouting::default()
    };
    let (result, calls) = reconcile_istio(istio_rollout(istio, false, Some(status)), cluster).await;
    result.expect("reconciled");
    assert!(patches_of(&calls, VS).is_empty(), "{:#?}", lines(&calls));
    let message = status_of(last_own(&calls).expect("status write"))
        .message
        .unwrap_or_default();
    assert!(
        message.contains("spec.strategy.canary.trafficRouting.istio.destinationRule.name")
            && message.contains("DestinationRule web does not exist"),
        "{message}"
    );
}

#[tokio::test]
async fn subset_level_points_the_canary_subset_then_sets_the_weights() {
    // A new canary: the canary subset still selects the stable revision.
    let (stable, canary) = (stable_revision(), canary_revision());
    let (status, mut base) = in_flight(0, 0);
    base.services.clear();
    let cluster = IstioCluster {
        base,
        virtual_services: BTreeMap::from([("web".into(), subset_vs(100, 0))]),
        destination_rule: Some(rule(&stable, &stable)),
    };
    let istio = IstioRouting {
        virtual_service: Some(one("web", &[])),
        destination_rule: Some(IstioDestinationRule {
            name: "web".into(),
            canary_subset_name: "canary".into(),
            stable_subset_name: "stable".into(),
        }),
        ..IstioRouting::default()
    };
    let (result, calls) = reconcile_istio(istio_rollout(istio, false, Some(status)), cluster).await;
    result.expect("reconciled");
    let writes: Vec<String> = calls
        .iter()
        .filter(|c| c.method == "PATCH" && c.path != STATUS)
        .map(Call::line)
        .collect();
    assert_eq!(
        writes,
        [format!("PATCH {DR}"), format!("PATCH {VS}/web")],
        "{:#?}",
        lines(&calls)
    );
    let dr = calls
        .iter()
        .find(|c| c.path == DR && c.method == "PATCH")
        .expect("dr");
    assert_eq!(
        dr.body,
        json!([
            {"op": "test", "path": "/spec/subsets/1/name", "value": "canary"},
            {"op": "test", "path": "/spec/subsets/1/labels/vigil.dev~1revision", "value": stable},
            {"op": "replace", "path": "/spec/subsets/1/labels/vigil.dev~1revision", "value": canary},
        ])
    );
    let vs = calls
        .iter()
        .find(|c| c.method == "PATCH" && c.path.starts_with(VS))
        .expect("vs");
    assert_eq!(
        vs.body,
        json!([
            {"op": "test", "path": "/spec/http/0/route/0/destination/host", "value": "web"},
            {"op": "test", "path": "/spec/http/0/route/0/destination/subset", "value": "stable"},
            {"op": "test", "path": "/spec/http/0/route/0/weight", "value": 100},
            {"op": "replace", "path": "/spec/http/0/route/0/weight", "value": 80},
            {"op": "test", "path": "/spec/http/0/route/1/destination/host", "value": "web"},
            {"op": "test", "path": "/spec/http/0/route/1/destination/subset", "value": "canary"},
            {"op": "test", "path": "/spec/http/0/route/1/weight", "value": 0},
            {"op": "replace", "path": "/spec/http/0/route/1/weight", "value": 20},
        ])
    );
    // No Service is configured, so none is read or patched.
    assert!(!calls.iter().any(|c| c.path.contains("/services/")));
}

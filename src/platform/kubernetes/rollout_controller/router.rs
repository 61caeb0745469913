//! The traffic router of a Rollout, chosen from its spec: one variant per router, each a
//! [`TrafficRouter`]. Everything else in the controller (acting, the finalizer, the put-back
//! of foreign edits, the hold on a missing or malformed router object) goes through this
//! type, so a new router is a variant here and an arm in [`Router::of`].

#[allow(clippy::wildcard_imports)]
use super::*;
use crate::traffic::nginx::{
    CanaryIngressConfig, DEFAULT_ANNOTATION_PREFIX, NginxIngress, canary_ingress_name,
    ingress_resource,
};
use crate::traffic::smi::{SmiSplit, SplitConfig, traffic_split_resource};
use crate::traffic::traefik::{TraefikWeights, traefik_service_resource};
use crate::traffic::{HeaderRoute, MirrorRoute, RouterKind};
use kube::api::ApiResource;

/// The labels of the router objects vigil creates for `rollout` (its children's label).
fn owned_labels(rollout: &Rollout) -> std::collections::BTreeMap<String, String> {
    std::collections::BTreeMap::from([(
        ROLLOUT_LABEL.to_owned(),
        rollout_label_value(&rollout.name_any()),
    )])
}

/// The controller owner reference to `rollout` that the router objects vigil creates carry
/// (garbage collected with it; a same-named object without it is not vigil's to touch).
fn owner_reference(rollout: &Rollout) -> serde_json::Value {
    rollout
        .controller_owner_ref(&())
        .and_then(|owner| serde_json::to_value(owner).ok())
        .unwrap_or_default()
}

/// The router of a Rollout.
pub(super) enum Router {
    /// `trafficRouting.gatewayAPI`: an HTTPRoute.
    Gateway(Box<GatewayRoute>),
    /// `trafficRouting.nginx`: the canary Ingress cloned from the stable one.
    Nginx(Box<NginxIngress>),
    /// `trafficRouting.smi`: a TrafficSplit.
    Smi(Box<SmiSplit>),
    /// `trafficRouting.traefik`: a TraefikService's weights.
    Traefik(Box<TraefikWeights>),
    /// No router (or one the controller does not drive, like the local proxy): the replica
    /// ratio is the weight.
    Replicas(ReplicaRatio),
}

/// Calls `$call` on whichever router `$router` is.
macro_rules! dispatch {
    ($router:expr, $inner:ident => $call:expr) => {
        match $router {
            Router::Gateway($inner) => $call,
            Router::Nginx($inner) => $call,
            Router::Smi($inner) => $call,
            Router::Traefik($inner) => $call,
            Router::Replicas($inner) => $call,
        }
    };
}

impl Router {
    pub(super) fn of(rollout: &Rollout, client: &Client, namespace: &str) -> Router {
        let canary = &rollout.spec.strategy.canary;
        let replicas = Router::Replicas(ReplicaRatio {
            configured: rollout.status.as_ref().map_or(0, |s| s.canary_weight),
        });
        let routing = canary.traffic_routing.as_ref();
        // validate_spec requires both Services of every router that sends traffic to them
        // (RouterKind::needs_services).
        let (Some(routing), Some(stable), Some(canary)) =
            (routing, &canary.stable_service, &canary.canary_service)
        else {
            return replicas;
        };
        let api =
            |resource: &ApiResource| Api::namespaced_with(client.clone(), namespace, resource);
        match RouterKind::of(Some(routing)) {
            RouterKind::GatewayApi => routing.gateway_api.as_ref().map_or(replicas, |gateway| {
                Router::Gateway(Box::new(GatewayRoute::new(
                    api(&http_route_resource()),
                    &gateway.http_route,
                    stable,
                    canary,
                    FIELD_MANAGER,
                )))
            }),
            RouterKind::Nginx => routing.nginx.as_ref().map_or(replicas, |nginx| {
                let config = CanaryIngressConfig {
                    name: canary_ingress_name(&rollout.name_any(), &nginx.stable_ingress),
                    stable_service: stable.clone(),
                    canary_service: canary.clone(),
                    prefix: nginx
                        .annotation_prefix
                        .clone()
                        .unwrap_or_else(|| DEFAULT_ANNOTATION_PREFIX.to_owned()),
                    additional: nginx.additional_ingress_annotations.clone(),
                    labels: owned_labels(rollout),
                    owner: owner_reference(rollout),
                };
                Router::Nginx(Box::new(NginxIngress::new(
                    api(&ingress_resource()),
                    &nginx.stable_ingress,
                    config,
                    FIELD_MANAGER,
                )))
            }),
            RouterKind::Smi => routing.smi.as_ref().map_or(replicas, |smi| {
                let config = SplitConfig {
                    name: smi
                        .traffic_split_name
                        .clone()
                        .unwrap_or_else(|| rollout.name_any()),
                    namespace: namespace.to_owned(),
                    root_service: smi.root_service.clone().unwrap_or_else(|| stable.clone()),
                    stable_service: stable.clone(),
                    canary_service: canary.clone(),
                    labels: owned_labels(rollout),
                    owner: owner_reference(rollout),
                };
                Router::Smi(Box::new(SmiSplit::new(
                    api(&traffic_split_resource()),
                    config,
                    FIELD_MANAGER,
                )))
            }),
            RouterKind::Traefik => routing.traefik.as_ref().map_or(replicas, |traefik| {
                Router::Traefik(Box::new(TraefikWeights::new(
                    api(&traefik_service_resource()),
                    &traefik.weighted_traefik_service_name,
                    stable,
                    canary,
                    FIELD_MANAGER,
                )))
            }),
            RouterKind::Local | RouterKind::ReplicaRatio => replicas,
        }
    }

    /// The field (under `spec`) a missing or malformed router object is reported at.
    pub(super) fn object_path(&self) -> String {
        let field = self.kind().object_field().unwrap_or_default();
        format!("spec.strategy.canary.trafficRouting.{field}")
    }
}

impl TrafficRouter for Router {
    fn kind(&self) -> RouterKind {
        dispatch!(self, r => r.kind())
    }

    async fn set_canary_weight(&self, canary_weight: i32) -> Result<(), TrafficError> {
        dispatch!(self, r => r.set_canary_weight(canary_weight).await)
    }

    async fn canary_weight(&self) -> Result<Option<i32>, TrafficError> {
        dispatch!(self, r => r.canary_weight().await)
    }

    async fn set_header_route(&self, route: &HeaderRoute) -> Result<(), TrafficError> {
        dispatch!(self, r => r.set_header_route(route).await)
    }

    async fn remove_header_route(&self, name: &str) -> Result<(), TrafficError> {
        dispatch!(self, r => r.remove_header_route(name).await)
    }

    async fn set_mirror_route(&self, route: &MirrorRoute) -> Result<(), TrafficError> {
        dispatch!(self, r => r.set_mirror_route(route).await)
    }

    async fn remove_mirror_route(&self, name: &str) -> Result<(), TrafficError> {
        dispatch!(self, r => r.remove_mirror_route(name).await)
    }

    async fn managed_routes(&self) -> Result<ManagedRoutes, TrafficError> {
        dispatch!(self, r => r.managed_routes().await)
    }
}

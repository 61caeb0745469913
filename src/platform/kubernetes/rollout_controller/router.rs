//! The traffic router of a Rollout, chosen from its spec: one variant per router, each a
//! [`TrafficRouter`]. Everything else in the controller (acting, the finalizer, the put-back
//! of foreign edits, the hold on a missing or malformed router object) goes through this
//! type, so a new router is a variant here and an arm in [`Router::of`].

#[allow(clippy::wildcard_imports)]
use super::*;
use crate::platform::kubernetes::cache::Caches;
use crate::traffic::nginx::{
    CanaryIngressConfig, DEFAULT_ANNOTATION_PREFIX, NginxIngress, canary_ingress_name,
    ingress_resource,
};
use crate::traffic::objects::ObjectApi;
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
    /// `trafficRouting.istio`: VirtualServices (and a DestinationRule).
    Istio(Box<IstioRouter>),
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
            Router::Istio($inner) => $call,
            Router::Nginx($inner) => $call,
            Router::Smi($inner) => $call,
            Router::Traefik($inner) => $call,
            Router::Replicas($inner) => $call,
        }
    };
}

impl Router {
    pub(super) fn of(
        rollout: &Rollout,
        client: &Client,
        namespace: &str,
        caches: &Caches,
    ) -> Router {
        // Read from the cache of the kind when it is watched (its CRD was installed at
        // startup), from the API server otherwise.
        let api = |resource: &ApiResource| {
            ObjectApi::new(
                Api::namespaced_with(client.clone(), namespace, resource),
                caches.router_cache(&resource.kind),
            )
        };
        let canary = &rollout.spec.strategy.canary;
        let replicas = Router::Replicas(ReplicaRatio {
            configured: rollout.status.as_ref().map_or(0, |s| s.canary_weight),
        });
        let routing = canary.traffic_routing.as_ref();
        // Istio's subset-level splitting needs no Service: it is built before the check.
        if let Some(istio) = routing.and_then(|r| r.istio.as_ref())
            && RouterKind::of(routing) == RouterKind::Istio
        {
            let parts = IstioRouterParts {
                virtual_services: api(&virtual_service_resource()),
                destination_rules: api(&destination_rule_resource()),
                namespace,
                stable_service: canary.stable_service.as_deref(),
                canary_service: canary.canary_service.as_deref(),
                vigil_routes: routing
                    .map(|r| r.managed_routes.iter().map(|m| m.name.clone()).collect())
                    .unwrap_or_default(),
                revision_label: REVISION_LABEL,
                field_manager: FIELD_MANAGER,
            };
            return IstioRouter::new(istio, parts)
                .map_or(replicas, |router| Router::Istio(Box::new(router)));
        }
        // validate_spec requires both Services of every router that sends traffic to them
        // (RouterKind::needs_services).
        let (Some(routing), Some(stable), Some(canary)) =
            (routing, &canary.stable_service, &canary.canary_service)
        else {
            return replicas;
        };
        match RouterKind::of(Some(routing)) {
            RouterKind::GatewayApi => routing.gateway_api.as_ref().map_or(replicas, |gateway| {
                let route = GatewayRoute::new(
                    api(&http_route_resource()),
                    &gateway.http_route,
                    stable,
                    canary,
                    FIELD_MANAGER,
                );
                let route = match crate::rollout::baseline::service(&rollout.spec) {
                    Some(baseline) => route.with_baseline(baseline),
                    None => route,
                };
                Router::Gateway(Box::new(route))
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
            // Built above, before the Services are required.
            RouterKind::Istio | RouterKind::Local | RouterKind::ReplicaRatio => replicas,
        }
    }

    /// The field (under `spec`) naming the router object `error` is about, where a missing
    /// or malformed object is reported.
    pub(super) fn object_path(&self, error: &TrafficError) -> String {
        let field = match self {
            Router::Istio(istio) => istio.field_of(error),
            _ => self.kind().object_field().unwrap_or_default().to_owned(),
        };
        format!("spec.strategy.canary.trafficRouting.{field}")
    }

    /// The revisions the router itself selects for the stable and canary (Istio's
    /// DestinationRule subsets); `None` when it selects none (the Services do).
    pub(super) async fn selected_revisions(
        &self,
    ) -> Result<Option<(Option<String>, Option<String>)>, TrafficError> {
        match self {
            Router::Istio(istio) => istio.subset_revisions().await,
            _ => Ok(None),
        }
    }

    /// The baseline's weight the router reports; `None` for a router without a three-way
    /// split (only the Gateway API has one, with `canary.baseline.service`).
    pub(super) async fn baseline_weight(&self) -> Result<Option<i32>, TrafficError> {
        match self {
            Router::Gateway(gateway) => gateway.baseline_weight().await,
            _ => Ok(None),
        }
    }

    /// Sets the baseline's weight; nothing for a router without a three-way split (the pure
    /// core decides it only for a router that reports one).
    pub(super) async fn set_baseline_weight(&self, weight: i32) -> Result<(), TrafficError> {
        match self {
            Router::Gateway(gateway) => gateway.set_baseline_weight(weight).await,
            _ => Ok(()),
        }
    }

    /// Points the router's own stable and canary selectors (Istio's subsets) at revisions
    /// (`None` leaves one as it is); nothing for routers without any.
    pub(super) async fn point_revisions(
        &self,
        stable: Option<&str>,
        canary: Option<&str>,
    ) -> Result<(), TrafficError> {
        match self {
            Router::Istio(istio) => istio.point_subsets(stable, canary).await,
            _ => Ok(()),
        }
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

//! The traffic router of a Rollout, chosen from its spec: one variant per router, each a
//! [`TrafficRouter`]. Everything else in the controller (acting, the finalizer, the put-back
//! of foreign edits, the hold on a missing or malformed router object) goes through this
//! type, so a new router is a variant here and an arm in [`Router::of`].

#[allow(clippy::wildcard_imports)]
use super::*;
use crate::traffic::{HeaderRoute, ManagedRoutes, MirrorRoute, RouterKind};

/// The router of a Rollout.
pub(super) enum Router {
    /// `trafficRouting.gatewayAPI`: an HTTPRoute.
    Gateway(Box<GatewayRoute>),
    /// No router (or one the controller does not drive, like the local proxy): the replica
    /// ratio is the weight.
    Replicas(ReplicaRatio),
}

/// Calls `$call` on whichever router `$router` is.
macro_rules! dispatch {
    ($router:expr, $inner:ident => $call:expr) => {
        match $router {
            Router::Gateway($inner) => $call,
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
        match (RouterKind::of(Some(routing)), &routing.gateway_api) {
            (RouterKind::GatewayApi, Some(gateway)) => {
                Router::Gateway(Box::new(GatewayRoute::new(
                    Api::namespaced_with(client.clone(), namespace, &http_route_resource()),
                    &gateway.http_route,
                    stable,
                    canary,
                    FIELD_MANAGER,
                )))
            }
            // Each router added later is an arm here, built from its own field.
            _ => replicas,
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

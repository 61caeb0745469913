//! The traffic router of a Rollout: its HTTPRoute, or the replica ratio.

#[allow(clippy::wildcard_imports)]
use super::*;

/// The router of a Rollout: an HTTPRoute, or the replica ratio.
pub(super) enum Router {
    Gateway(Box<GatewayRoute>),
    Replicas(ReplicaRatio),
}

impl Router {
    pub(super) fn of(rollout: &Rollout, client: &Client, namespace: &str) -> Router {
        let canary = &rollout.spec.strategy.canary;
        let gateway = canary
            .traffic_routing
            .as_ref()
            .and_then(|t| t.gateway_api.as_ref());
        match (gateway, &canary.stable_service, &canary.canary_service) {
            (Some(gateway), Some(stable), Some(canary)) => {
                Router::Gateway(Box::new(GatewayRoute::new(
                    Api::namespaced_with(client.clone(), namespace, &http_route_resource()),
                    &gateway.http_route,
                    stable,
                    canary,
                    FIELD_MANAGER,
                )))
            }
            _ => Router::Replicas(ReplicaRatio {
                configured: rollout.status.as_ref().map_or(0, |s| s.canary_weight),
            }),
        }
    }

    pub(super) async fn set(&self, weight: i32) -> Result<(), TrafficError> {
        match self {
            Router::Gateway(route) => route.set_canary_weight(weight).await,
            Router::Replicas(ratio) => ratio.set_canary_weight(weight).await,
        }
    }

    pub(super) async fn read(&self) -> Result<Option<i32>, TrafficError> {
        match self {
            Router::Gateway(route) => route.canary_weight().await,
            Router::Replicas(ratio) => ratio.canary_weight().await,
        }
    }
}

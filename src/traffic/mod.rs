//! Traffic routers: where the canary's share of traffic is set and read back.
//!
//! The desired state of a router object is built by pure functions (see
//! [`gateway_api::weight_patch`]); the [`TrafficRouter`] implementations only send it. The
//! local platform's built-in proxy (`trafficRouting.local`) lives with the local platform.

pub mod gateway_api;
pub mod nginx;
pub mod replicas;
pub mod smi;
pub mod traefik;

use std::future::Future;

/// Why a router could not be read or changed.
#[derive(Debug, thiserror::Error)]
pub enum TrafficError {
    /// The router object could not be read from the API.
    #[error("failed to get HTTPRoute {route}: {source}")]
    GetRoute {
        /// The route's name.
        route: String,
        /// The cause.
        source: kube::Error,
    },
    /// The router object does not hold what vigil needs (missing backendRefs, bad weights).
    #[error("HTTPRoute {route}: {source}")]
    ReadRoute {
        /// The route's name.
        route: String,
        /// What is wrong.
        source: gateway_api::RouteError,
    },
    /// The weight patch was rejected (a `test` op failed because the route changed, or RBAC).
    #[error("failed to patch the weights of HTTPRoute {route}: {source}")]
    PatchRoute {
        /// The route's name.
        route: String,
        /// The cause.
        source: kube::Error,
    },
}

/// Sets and reads back the percent of traffic sent to the canary.
pub trait TrafficRouter: Send + Sync {
    /// Sends `canary_weight` percent to the canary, the rest to the stable.
    fn set_canary_weight(
        &self,
        canary_weight: i32,
    ) -> impl Future<Output = Result<(), TrafficError>> + Send;

    /// The canary weight the router reports; `None` when it cannot tell (for example the
    /// rules disagree), which makes a `setWeight` step wait.
    fn canary_weight(&self) -> impl Future<Output = Result<Option<i32>, TrafficError>> + Send;
}

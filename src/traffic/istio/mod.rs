//! Istio routing: the weights of VirtualService HTTP routes, and DestinationRule subsets.
//!
//! The VirtualServices and the DestinationRule belong to the user. vigil changes only the
//! `weight` of the stable and canary destinations of the routes it manages, and the
//! `vigil.dev/revision` key of the stable and canary subsets' `labels`, each with a JSON patch
//! whose `test` ops guard every path it changes, so an object edited meanwhile makes the patch
//! fail instead of being overwritten. The objects are reached as dynamic objects (no crate
//! pins an older kube) through the small typed views [`http_routes`] and [`subsets`].
//!
//! Two ways to tell the stable from the canary in a route ([`Split`]): by `host` (the stable
//! and canary Services, Argo's host-level splitting) or by `subset` (one host, two subsets of
//! a DestinationRule, Argo's subset-level splitting).

mod managed;
mod router;
mod subsets;
mod weights;

use json_patch::PatchOperation;
use json_patch::TestOperation;
use json_patch::jsonptr::PointerBuf;
use kube::api::{ApiResource, GroupVersionKind};
use serde_json::Value;

pub use managed::{
    ROUTES_ANNOTATION, check_route_names, header_route_patch, mirror_route_patch,
    read_managed_routes, recorded_routes, remove_route_patch, vigil_route_names,
};
pub use router::{DESTINATION_RULE, IstioRouter, IstioRouterParts, VIRTUAL_SERVICE};
pub use subsets::{Subset, subset_patch, subset_revisions, subsets};
pub use weights::{
    Destination, HttpRoute, ManagedRoute, Side, Split, agreed_weight, canary_weight, http_routes,
    managed_routes, weight_patch,
};

/// The API group of Istio's networking resources.
pub const ISTIO_NETWORKING_GROUP: &str = "networking.istio.io";
/// The version vigil reads and writes: `v1`, served since Istio 1.22 next to `v1beta1` and
/// `v1alpha3` (same schema).
pub const ISTIO_NETWORKING_VERSION: &str = "v1";

/// What is wrong with a VirtualService or DestinationRule for vigil's purposes; every
/// variant names the field in the object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IstioError {
    /// A field vigil reads is missing or of the wrong type.
    #[error("{path}: {problem}")]
    ReadField {
        /// The field, e.g. `spec.http[1].route[0].weight`.
        path: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A route named in the Rollout's `routes` is not in the VirtualService.
    #[error("spec.http has no route named {name:?}")]
    FindNamedRoute {
        /// The route's name.
        name: String,
    },
    /// No HTTP route has a stable or canary destination.
    #[error("no route in spec.http has a destination with {stable} or {canary}")]
    FindDestinations {
        /// The stable destination, described (`host "web-stable"`, `subset "stable"`).
        stable: String,
        /// The canary destination, described.
        canary: String,
    },
    /// A managed route lacks the stable or the canary destination, so no weight can be split.
    #[error("spec.http[{route}] ({name}) has no destination with {missing}")]
    FindPairedDestination {
        /// Index of the route.
        route: usize,
        /// The route's name, or `unnamed`.
        name: String,
        /// The destination it lacks, described.
        missing: String,
    },
    /// The stable and canary destinations are the same, so weights cannot tell them apart.
    #[error("the stable and canary destinations are both {0}")]
    DistinguishDestinations(String),
    /// A route carries a name listed in `managedRoutes` that vigil did not put there.
    #[error(
        "spec.http[{route}] is named {name:?}, a name the Rollout lists in trafficRouting.managedRoutes, but vigil did not create it: rename the managed route (vigil would replace or remove this route as its own)"
    )]
    ClaimRoute {
        /// Index of the route.
        route: usize,
        /// Its name.
        name: String,
    },
    /// The DestinationRule has no subset of that name.
    #[error("spec.subsets has no subset named {name:?}")]
    FindSubset {
        /// The subset's name.
        name: String,
    },
}

fn read_field(path: impl Into<String>, problem: impl Into<String>) -> IstioError {
    IstioError::ReadField {
        path: path.into(),
        problem: problem.into(),
    }
}

fn resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(ISTIO_NETWORKING_GROUP, ISTIO_NETWORKING_VERSION, kind),
        plural,
    )
}

/// Istio's VirtualService resource (`networking.istio.io/v1`).
pub fn virtual_service_resource() -> ApiResource {
    resource("VirtualService", "virtualservices")
}

/// Istio's DestinationRule resource (`networking.istio.io/v1`).
pub fn destination_rule_resource() -> ApiResource {
    resource("DestinationRule", "destinationrules")
}

fn pointer<const N: usize>(tokens: [&str; N]) -> PointerBuf {
    PointerBuf::from_tokens(tokens)
}

fn test(path: PointerBuf, value: Value) -> PatchOperation {
    PatchOperation::Test(TestOperation { path, value })
}

#[cfg(test)]
mod tests;

#[cfg(test)]
#[path = "managed_tests.rs"]
mod managed_tests;

//! Traffic routers: where the canary's share of traffic is set and read back, and where the
//! managed header and mirror routes of a release are put in place.
//!
//! The desired state of a router object is built by pure functions (see
//! [`gateway_api::weight_patch`]); the [`TrafficRouter`] implementations only send it. The
//! local platform's built-in proxy (`trafficRouting.local`) lives with the local platform.
//!
//! # Adding a router
//!
//! 1. `src/api/rollout.rs`: a field of [`crate::api::TrafficRouting`] (Argo's name).
//! 2. [`RouterKind`]: a variant, its arm in [`RouterKind::configured`] (so `validate_spec`
//!    allows at most one router), its field names and which [`Capability`]s it has.
//! 3. `traffic/<router>.rs`: pure readers and guarded patch builders, a read-error enum (a
//!    variant of [`ReadError`]), and a thin I/O type implementing [`TrafficRouter`]: every
//!    error is a [`TrafficError`] naming the object's kind and name.
//! 4. `platform/kubernetes/rollout_controller/router.rs`: a variant of `Router`, built from the
//!    spec in `Router::of`. The finalizer (all traffic back to stable), the foreign-edit
//!    put-back with its Event, and the hold on a missing or malformed object (the field named
//!    in status) then work for it unchanged.

pub mod gateway_api;
pub mod gateway_api_baseline;
pub mod gateway_api_routes;
pub mod istio;
mod kind;
#[cfg(test)]
mod mock;
pub mod nginx;
pub mod objects;
pub mod replicas;
mod routes;
pub mod smi;
pub mod traefik;

use std::future::Future;

pub use kind::{Capability, RouterKind};
pub use routes::{HeaderMatch, HeaderRoute, ManagedRoutes, MirrorMatch, MirrorRoute, StringMatch};

/// What is wrong with a router object for vigil's purposes: one variant per router, each
/// holding that router's own reasons.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// A Gateway API HTTPRoute.
    #[error(transparent)]
    GatewayApi(#[from] gateway_api::RouteError),
    /// An Istio VirtualService or DestinationRule.
    #[error(transparent)]
    Istio(#[from] istio::IstioError),
    /// The stable or canary Ingress of the NGINX router.
    #[error(transparent)]
    Nginx(#[from] nginx::IngressError),
    /// An SMI TrafficSplit.
    #[error(transparent)]
    Smi(#[from] smi::SplitError),
    /// A Traefik TraefikService.
    #[error(transparent)]
    Traefik(#[from] traefik::WeightedServiceError),
}

/// Why a router could not be read or changed. Every variant names the router object (its
/// kind and name) so status, logs and events say which object is at fault.
#[derive(Debug, thiserror::Error)]
pub enum TrafficError {
    /// The router object could not be read from the API (404 when it does not exist).
    #[error("failed to get {kind} {name}: {source}")]
    GetObject {
        /// The object's kind, e.g. `HTTPRoute`.
        kind: &'static str,
        /// The object's name.
        name: String,
        /// The cause.
        source: kube::Error,
    },
    /// The router object does not hold what vigil needs (missing backends, bad weights).
    #[error("{kind} {name}: {source}")]
    ReadObject {
        /// The object's kind.
        kind: &'static str,
        /// The object's name.
        name: String,
        /// What is wrong.
        source: ReadError,
    },
    /// An object vigil owns (the NGINX canary Ingress, the SMI TrafficSplit) could not be
    /// created.
    #[error("failed to create {kind} {name}: {source}")]
    CreateObject {
        /// The object's kind.
        kind: &'static str,
        /// The object's name.
        name: String,
        /// The cause.
        source: kube::Error,
    },
    /// An object vigil owns (the NGINX canary Ingress) could not be deleted.
    #[error("failed to delete {kind} {name}: {source}")]
    DeleteObject {
        /// The object's kind.
        kind: &'static str,
        /// The object's name.
        name: String,
        /// The cause.
        source: kube::Error,
    },
    /// The patch was rejected (a `test` op failed because the object changed, or RBAC).
    #[error("failed to patch {kind} {name}: {source}")]
    PatchObject {
        /// The object's kind.
        kind: &'static str,
        /// The object's name.
        name: String,
        /// The cause.
        source: kube::Error,
    },
    /// The router cannot do what was asked (`validate_spec` rejects such a spec up front,
    /// so this is reached only by a bug).
    #[error("the {} router cannot {}", router.name(), capability.describe())]
    Unsupported {
        /// The router.
        router: RouterKind,
        /// What it cannot do.
        capability: Capability,
    },
}

impl TrafficError {
    /// Whether the router object does not exist (a 404 when reading it).
    pub fn object_missing(&self) -> bool {
        matches!(
            self,
            TrafficError::GetObject { source: kube::Error::Api(status), .. } if status.is_not_found()
        )
    }

    /// Why the rollout must hold (nothing moves) until the user fixes the router object:
    /// it does not exist, or it lacks what vigil needs. `None` for passing failures (the API
    /// unreachable, a conflict), which are retried.
    pub fn hold_reason(&self) -> Option<String> {
        match self {
            TrafficError::GetObject { kind, name, .. } if self.object_missing() => Some(format!(
                "{kind} {name} does not exist; no traffic moves until it does"
            )),
            TrafficError::ReadObject { .. } => {
                Some(format!("{self}; no traffic moves until it is fixed"))
            }
            _ => None,
        }
    }
}

/// The note of the Warning event vigil records when it puts back a weight someone else
/// changed: the router reports `seen`, which is neither `last_set` (the weight vigil last sent,
/// `status.canaryWeight`; `None` before vigil manages the router) nor `wanted` (the weight
/// being sent now). `None` when there is nothing to report. The same for every router, since
/// each reports its weight the same way.
pub fn foreign_weight_edit(
    seen: Option<i32>,
    last_set: Option<i32>,
    wanted: i32,
) -> Option<String> {
    let (seen, last_set) = (seen?, last_set?);
    (seen != wanted && seen != last_set).then(|| {
        format!(
            "the router reports canary weight {seen}, but vigil set {last_set} and owns it: setting {wanted} back"
        )
    })
}

/// Sets and reads back the percent of traffic sent to the canary, and the managed header and
/// mirror routes. Every change is idempotent; the pure core decides what is wanted from what
/// is read back, so a router only sends and reads.
pub trait TrafficRouter: Send + Sync {
    /// Which router this is.
    fn kind(&self) -> RouterKind;

    /// Sends `canary_weight` percent to the canary, the rest to the stable.
    fn set_canary_weight(
        &self,
        canary_weight: i32,
    ) -> impl Future<Output = Result<(), TrafficError>> + Send;

    /// The canary weight the router reports; `None` when it cannot tell (for example the
    /// rules disagree), which makes a `setWeight` step wait.
    fn canary_weight(&self) -> impl Future<Output = Result<Option<i32>, TrafficError>> + Send;

    /// Puts the managed header route `route` in place (replacing one of the same name):
    /// requests matching it reach only the canary. Routers without
    /// [`Capability::HeaderRoute`] answer [`TrafficError::Unsupported`].
    fn set_header_route(
        &self,
        route: &HeaderRoute,
    ) -> impl Future<Output = Result<(), TrafficError>> + Send {
        let _ = route;
        std::future::ready(Err(TrafficError::Unsupported {
            router: self.kind(),
            capability: Capability::HeaderRoute,
        }))
    }

    /// Removes the managed header route `name`; absent already is success (a router that
    /// cannot hold one has none to remove).
    fn remove_header_route(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<(), TrafficError>> + Send {
        let _ = name;
        std::future::ready(Ok(()))
    }

    /// Puts the managed mirror route `route` in place (replacing one of the same name): a
    /// copy of the matching requests goes to the canary, its responses discarded. Routers
    /// without [`Capability::MirrorRoute`] answer [`TrafficError::Unsupported`].
    fn set_mirror_route(
        &self,
        route: &MirrorRoute,
    ) -> impl Future<Output = Result<(), TrafficError>> + Send {
        let _ = route;
        std::future::ready(Err(TrafficError::Unsupported {
            router: self.kind(),
            capability: Capability::MirrorRoute,
        }))
    }

    /// Removes the managed mirror route `name`; absent already is success.
    fn remove_mirror_route(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<(), TrafficError>> + Send {
        let _ = name;
        std::future::ready(Ok(()))
    }

    /// The managed header and mirror routes in place, read back from the router object (a
    /// step that sets one counts only once this reports it as asked). Routers that can hold
    /// none report none.
    fn managed_routes(&self) -> impl Future<Output = Result<ManagedRoutes, TrafficError>> + Send {
        std::future::ready(Ok(ManagedRoutes::default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_weight_vigil_neither_set_nor_wants_is_a_foreign_edit() {
        // (seen, last set, wanted) -> reported?
        let table = [
            (Some(50), Some(20), 20, true),
            (Some(50), Some(20), 0, true),
            (Some(20), Some(20), 30, false), // vigil's own step up
            (Some(30), Some(20), 30, false), // already where vigil wants it
            (None, Some(20), 20, false),     // unreadable: nothing to say
            (Some(50), None, 0, false),      // before vigil manages the router
        ];
        for (seen, last_set, wanted, reported) in table {
            assert_eq!(
                foreign_weight_edit(seen, last_set, wanted).is_some(),
                reported,
                "{seen:?} {last_set:?} {wanted}"
            );
        }
        assert_eq!(
            foreign_weight_edit(Some(50), Some(20), 20).as_deref(),
            Some(
                "the router reports canary weight 50, but vigil set 20 and owns it: setting 20 back"
            )
        );
    }

    #[test]
    fn a_missing_object_holds_and_names_itself_while_an_outage_does_not_hold() {
        let missing = TrafficError::GetObject {
            kind: "HTTPRoute",
            name: "web".into(),
            source: kube::Error::Api(
                kube::core::Status::failure("httproutes \"web\" not found", "NotFound")
                    .with_code(404)
                    .boxed(),
            ),
        };
        assert!(missing.object_missing());
        assert_eq!(
            missing.hold_reason().as_deref(),
            Some("HTTPRoute web does not exist; no traffic moves until it does")
        );
        let malformed = TrafficError::ReadObject {
            kind: "HTTPRoute",
            name: "web".into(),
            source: gateway_api::RouteError::DistinguishServices("web".into()).into(),
        };
        assert!(!malformed.object_missing());
        assert_eq!(
            malformed.hold_reason().as_deref(),
            Some(
                "HTTPRoute web: stableService and canaryService are both \"web\"; no traffic moves until it is fixed"
            )
        );
        let outage = TrafficError::GetObject {
            kind: "HTTPRoute",
            name: "web".into(),
            source: kube::Error::Api(
                kube::core::Status::failure("etcd is sad", "InternalError")
                    .with_code(500)
                    .boxed(),
            ),
        };
        assert!(!outage.object_missing());
        assert_eq!(outage.hold_reason(), None);
    }
}

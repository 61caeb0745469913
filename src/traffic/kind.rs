//! Which router a Rollout uses and what each router can do: pure, read from the spec, shared
//! by `validate_spec` (at most one router; steps only a capable router can take), the state
//! machine and both platforms.

use crate::api::TrafficRouting;

/// One of the traffic routers vigil drives. The replica ratio is the fallback when
/// `trafficRouting` is absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouterKind {
    /// `trafficRouting.gatewayAPI`: weights of an HTTPRoute's backendRefs.
    GatewayApi,
    /// `trafficRouting.istio`: weights of VirtualService HTTP route destinations (and
    /// DestinationRule subsets).
    Istio,
    /// `trafficRouting.nginx`: a canary Ingress for ingress-nginx, cloned from the stable one.
    Nginx,
    /// `trafficRouting.smi`: an SMI TrafficSplit vigil owns.
    Smi,
    /// `trafficRouting.traefik`: weights of a Traefik TraefikService.
    Traefik,
    /// `trafficRouting.local`: the local platform's built-in proxy.
    Local,
    /// No `trafficRouting`: the replica ratio approximates the weight.
    ReplicaRatio,
}

/// Something beyond weights that a step may ask of a router.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Capability {
    /// A managed route sending requests with a matching header only to the canary
    /// (`setHeaderRoute`).
    HeaderRoute,
    /// A managed route mirroring a share of the matching requests to the canary
    /// (`setMirrorRoute`).
    MirrorRoute,
}

impl Capability {
    /// The step that needs this capability.
    pub fn step(self) -> &'static str {
        match self {
            Capability::HeaderRoute => "setHeaderRoute",
            Capability::MirrorRoute => "setMirrorRoute",
        }
    }

    /// What the capability does, for error messages.
    pub fn describe(self) -> &'static str {
        match self {
            Capability::HeaderRoute => "route requests by header (setHeaderRoute)",
            Capability::MirrorRoute => "mirror requests (setMirrorRoute)",
        }
    }
}

impl RouterKind {
    /// Every router a Rollout can name under `trafficRouting`.
    pub const ROUTERS: [RouterKind; 6] = [
        RouterKind::GatewayApi,
        RouterKind::Istio,
        RouterKind::Nginx,
        RouterKind::Smi,
        RouterKind::Traefik,
        RouterKind::Local,
    ];

    /// Every router set in `routing`, in field order (more than one is a spec error).
    pub fn configured(routing: &TrafficRouting) -> Vec<RouterKind> {
        [
            (RouterKind::GatewayApi, routing.gateway_api.is_some()),
            (RouterKind::Istio, routing.istio.is_some()),
            (RouterKind::Nginx, routing.nginx.is_some()),
            (RouterKind::Smi, routing.smi.is_some()),
            (RouterKind::Traefik, routing.traefik.is_some()),
            (RouterKind::Local, routing.local.is_some()),
        ]
        .into_iter()
        .filter_map(|(kind, set)| set.then_some(kind))
        .collect()
    }

    /// The router a Rollout with `routing` uses: the first one set, else the replica ratio.
    pub fn of(routing: Option<&TrafficRouting>) -> RouterKind {
        routing
            .and_then(|r| RouterKind::configured(r).first().copied())
            .unwrap_or(RouterKind::ReplicaRatio)
    }

    /// Whether a router sets the weight (false for the replica ratio, whose pods are the
    /// weight).
    pub fn sets_weights(self) -> bool {
        self != RouterKind::ReplicaRatio
    }

    /// Whether the router's data plane may apply a change after the object reports it (a
    /// gateway or mesh reconciling the object), so revisions traffic left keep their pods
    /// `scaleDownDelaySeconds` (default 30) longer. The local proxy switches at once, and the
    /// replica ratio's endpoints are drained by Kubernetes.
    pub fn applies_changes_late(self) -> bool {
        match self {
            RouterKind::GatewayApi
            | RouterKind::Istio
            | RouterKind::Nginx
            | RouterKind::Smi
            | RouterKind::Traefik => true,
            RouterKind::Local | RouterKind::ReplicaRatio => false,
        }
    }

    /// Whether the router sends traffic to `stableService` and `canaryService` (so both must
    /// be set). Istio needs them only for host-level splitting, which its own rules check
    /// (subset-level splitting needs no Service).
    pub fn needs_services(self) -> bool {
        match self {
            RouterKind::GatewayApi | RouterKind::Nginx | RouterKind::Smi | RouterKind::Traefik => {
                true
            }
            RouterKind::Istio | RouterKind::Local | RouterKind::ReplicaRatio => false,
        }
    }

    /// The router's field under `trafficRouting` (`None` for the replica ratio).
    pub fn field(self) -> Option<&'static str> {
        match self {
            RouterKind::GatewayApi => Some("gatewayAPI"),
            RouterKind::Istio => Some("istio"),
            RouterKind::Nginx => Some("nginx"),
            RouterKind::Smi => Some("smi"),
            RouterKind::Traefik => Some("traefik"),
            RouterKind::Local => Some("local"),
            RouterKind::ReplicaRatio => None,
        }
    }

    /// The field under `trafficRouting` naming the router's object, which a missing or
    /// malformed object is reported at (`None` when the router has no object). Istio has
    /// several objects: its router names the one at fault, this is the first.
    pub fn object_field(self) -> Option<&'static str> {
        match self {
            RouterKind::GatewayApi => Some("gatewayAPI.httpRoute"),
            RouterKind::Istio => Some("istio.virtualService.name"),
            RouterKind::Nginx => Some("nginx.stableIngress"),
            RouterKind::Smi => Some("smi.trafficSplitName"),
            RouterKind::Traefik => Some("traefik.weightedTraefikServiceName"),
            RouterKind::Local | RouterKind::ReplicaRatio => None,
        }
    }

    /// The router's name for people.
    pub fn name(self) -> &'static str {
        match self {
            RouterKind::GatewayApi => "Gateway API (trafficRouting.gatewayAPI)",
            RouterKind::Istio => "Istio (trafficRouting.istio)",
            RouterKind::Nginx => "NGINX Ingress (trafficRouting.nginx)",
            RouterKind::Smi => "SMI (trafficRouting.smi)",
            RouterKind::Traefik => "Traefik (trafficRouting.traefik)",
            RouterKind::Local => "local proxy (trafficRouting.local)",
            RouterKind::ReplicaRatio => "replica-ratio (no trafficRouting)",
        }
    }

    /// Whether the router can do `capability`.
    pub fn supports(self, capability: Capability) -> bool {
        match (self, capability) {
            (
                RouterKind::GatewayApi | RouterKind::Istio | RouterKind::Local,
                Capability::HeaderRoute | Capability::MirrorRoute,
            ) => true,
            // One header on the canary Ingress: canary-by-header with a value or a pattern.
            (RouterKind::Nginx, Capability::HeaderRoute) => true,
            (RouterKind::Nginx, Capability::MirrorRoute)
            | (
                RouterKind::Smi | RouterKind::Traefik | RouterKind::ReplicaRatio,
                Capability::HeaderRoute | Capability::MirrorRoute,
            ) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{GatewayApiRouting, LocalRouting};

    // Other routers add fields to TrafficRouting; the update keeps this test theirs too.
    #[allow(clippy::needless_update)]
    #[test]
    fn the_configured_routers_are_listed_and_the_first_is_used() {
        let none = TrafficRouting::default();
        assert!(RouterKind::configured(&none).is_empty());
        assert_eq!(RouterKind::of(Some(&none)), RouterKind::ReplicaRatio);
        assert_eq!(RouterKind::of(None), RouterKind::ReplicaRatio);
        let both = TrafficRouting {
            gateway_api: Some(GatewayApiRouting {
                http_route: "web".into(),
            }),
            local: Some(LocalRouting {
                listen: "127.0.0.1:1".into(),
            }),
            ..TrafficRouting::default()
        };
        assert_eq!(
            RouterKind::configured(&both),
            vec![RouterKind::GatewayApi, RouterKind::Local]
        );
        assert_eq!(RouterKind::of(Some(&both)), RouterKind::GatewayApi);
        assert!(RouterKind::GatewayApi.sets_weights());
        assert!(!RouterKind::ReplicaRatio.sets_weights());
    }

    #[test]
    fn the_replica_ratio_can_neither_route_by_header_nor_mirror() {
        for capability in [Capability::HeaderRoute, Capability::MirrorRoute] {
            assert!(!RouterKind::ReplicaRatio.supports(capability));
        }
    }
}

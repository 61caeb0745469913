//! `trafficRouting.istio`: Istio VirtualServices (and a DestinationRule) as the router, with
//! Argo Rollouts' field names so that manifests carry over.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The most VirtualServices one Rollout may drive (`virtualService` plus `virtualServices`).
/// Each is read on every reconcile, so the bound keeps a reconcile's API calls small.
pub const MAX_VIRTUAL_SERVICES: usize = 16;
/// The most HTTP routes one VirtualService entry may name in `routes`.
pub const MAX_NAMED_ROUTES: usize = 64;
/// The longest name of a VirtualService, DestinationRule, route or subset (a Kubernetes
/// object name is at most 253 characters; route and subset names follow it).
pub const MAX_ISTIO_NAME_LEN: usize = 253;

/// Istio routing: vigil sets the weights of the stable and canary destinations of the HTTP
/// routes of one or more VirtualServices (`networking.istio.io/v1`, Istio 1.22 or later), and
/// with `destinationRule` points the stable and canary subsets at the revisions' pods.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IstioRouting {
    /// One VirtualService in the Rollout's namespace. Set this or `virtualServices`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_service: Option<IstioVirtualService>,
    /// Several VirtualServices (in the Rollout's namespace) that all carry the same split,
    /// for example one bound to the ingress gateway and one for the mesh. Set this or
    /// `virtualService`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub virtual_services: Vec<IstioVirtualService>,
    /// Subset-level splitting: the routes' destinations name subsets of this DestinationRule
    /// instead of the stable and canary Services. Without it, destinations are told apart by
    /// their `host` (`stableService` and `canaryService`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_rule: Option<IstioDestinationRule>,
}

/// A VirtualService whose HTTP routes carry the split.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IstioVirtualService {
    /// The VirtualService's name, in the Rollout's namespace.
    pub name: String,
    /// Names of the HTTP routes (`spec.http[].name`) whose destinations vigil weighs; each
    /// must have a stable and a canary destination. Empty: every HTTP route that has one of
    /// the two.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<String>,
}

/// A DestinationRule whose stable and canary subsets vigil points at the revisions' pods (it
/// adds the `vigil.dev/revision` key to each subset's `labels`, and changes nothing else).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IstioDestinationRule {
    /// The DestinationRule's name, in the Rollout's namespace.
    pub name: String,
    /// The subset that selects the canary revision's pods.
    pub canary_subset_name: String,
    /// The subset that selects the stable revision's pods.
    pub stable_subset_name: String,
}

impl IstioRouting {
    /// Every VirtualService entry with the path of its field in the Rollout:
    /// `virtualService` first, then each of `virtualServices`.
    pub fn entries(&self) -> Vec<(String, &IstioVirtualService)> {
        let single = self
            .virtual_service
            .iter()
            .map(|vs| ("virtualService".to_owned(), vs));
        let several = self
            .virtual_services
            .iter()
            .enumerate()
            .map(|(i, vs)| (format!("virtualServices[{i}]"), vs));
        single.chain(several).collect()
    }
}

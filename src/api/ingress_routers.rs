//! The settings of the NGINX Ingress, SMI and Traefik routers (`trafficRouting.nginx`,
//! `.smi`, `.traefik`), with Argo Rollouts' field names.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// NGINX Ingress routing: vigil clones `stableIngress` into a canary Ingress it owns.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NginxRouting {
    /// Name of the Ingress (in the Rollout's namespace) that routes to `stableService`. vigil
    /// only reads it: while the canary gets traffic, vigil owns the Ingress
    /// `<rollout>-<stableIngress>-canary`, made of its rules that route to `stableService`
    /// pointed at `canaryService`, with the `canary` and `canary-weight` annotations; vigil
    /// deletes it when the weight is back to 0.
    pub stable_ingress: String,
    /// The annotation prefix ingress-nginx reads (its `--annotations-prefix`). Default
    /// `nginx.ingress.kubernetes.io`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotation_prefix: Option<String>,
    /// More annotations for the canary Ingress, keys without the prefix (e.g.
    /// `canary-by-cookie: beta`). At most 16, and only the canary selectors
    /// `canary-by-header`, `canary-by-header-value` and `canary-by-cookie`: vigil creates
    /// the Ingress with its own permissions, so any other key is refused.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub additional_ingress_annotations: BTreeMap<String, String>,
}

/// SMI routing: vigil creates and owns a `split.smi-spec.io/v1alpha2` TrafficSplit (served by
/// Linkerd's SMI extension and Open Service Mesh) of the root Service with the stable and
/// canary Services as its backends.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SmiRouting {
    /// The Service clients call (the TrafficSplit's `spec.service`). Default `stableService`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_service: Option<String>,
    /// Name of the TrafficSplit vigil creates. Default: the Rollout's name. One of that name
    /// that the Rollout does not own holds the Rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_split_name: Option<String>,
}

/// Traefik routing: vigil sets the weights of the stable and canary Services in a
/// `traefik.io/v1alpha1` TraefikService's `spec.weighted.services`, and nothing else of it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TraefikRouting {
    /// Name of the TraefikService in the Rollout's namespace. Its `spec.weighted.services` must
    /// list `stableService` and `canaryService` once each.
    pub weighted_traefik_service_name: String,
}

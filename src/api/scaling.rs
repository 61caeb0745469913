//! The scaling controls of a canary (Argo Rollouts' names): the `setCanaryScale` step and the
//! per-role pod metadata.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A `setCanaryScale` step: how many pods the canary runs from this step on, independently of
/// the traffic weight (needs `trafficRouting`; without a router the replica ratio is the
/// weight). Exactly one of `replicas`, `weight` and `matchTrafficWeight` is set. It holds until
/// the next `setCanaryScale` step; at promotion the canary scales to `spec.replicas` as always.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SetCanaryScale {
    /// Run exactly this many canary pods (0..=`spec.replicas`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub replicas: Option<i32>,
    /// Run this percent (0..=100) of `spec.replicas` as canary pods, rounded up; it follows
    /// `spec.replicas` when an autoscaler changes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub weight: Option<i32>,
    /// `true`: go back to the default, canary pods that follow the traffic weight.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub match_traffic_weight: bool,
}

/// Labels and annotations vigil puts on one role's pods (`canaryMetadata`, `stableMetadata`),
/// through the ReplicaSet's pod template and on the pods already running, and takes off again
/// when the revision changes role (the canary's pods get `stableMetadata` once it is promoted).
/// They never change the revision (the template hash) and never touch the labels of the
/// selector.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodMetadata {
    /// Labels to add, e.g. `role: canary`. At most 32; keys and values follow Kubernetes'
    /// label syntax.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations to add. At most 32; values at most 4096 characters.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl PodMetadata {
    /// Whether there is nothing to add.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.annotations.is_empty()
    }
}

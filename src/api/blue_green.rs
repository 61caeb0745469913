//! The blue-green strategy (`spec.strategy.blueGreen`), with Argo Rollouts' field names.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::rollout::AnalysisStep;

/// A blue-green release: the new revision runs beside the active one, reachable through the
/// preview Service only; once promoted, the active Service is switched to it at once.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BlueGreenStrategy {
    /// Service whose selector vigil points at the active revision's pods (the one serving
    /// production traffic); switched to the new revision at promotion. Required, unless
    /// `local` is set (`vigil run`'s proxy plays this Service).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_service: Option<String>,
    /// Service whose selector vigil points at the new revision's pods before promotion, so it
    /// can be tried without production traffic. Optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_service: Option<String>,
    /// Pods of the new revision before promotion (default `replicas`). At promotion it is
    /// scaled to `replicas` before the switch. 0 runs no preview pods at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub preview_replica_count: Option<i32>,
    /// Analysis of the preview, started once its pods are ready, before the switch: Failed
    /// aborts (the active revision keeps serving), Inconclusive pauses with the reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_promotion_analysis: Option<AnalysisStep>,
    /// Analysis started once the active Service was switched to the new revision: Failed
    /// switches it back to the previous revision at once (kept at full scale until this
    /// analysis ends) and aborts; Inconclusive pauses with the reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_promotion_analysis: Option<AnalysisStep>,
    /// Promote without waiting for `vigil promote` once the preview is ready and its
    /// analysis passed. Default true; false pauses before the switch (`BlueGreenPause`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_promotion_enabled: Option<bool>,
    /// With automatic promotion, pause this many seconds before the switch (`vigil promote`
    /// ends the pause sooner). Default 0: no pause. Not allowed with
    /// `autoPromotionEnabled: false`, which waits for `vigil promote` instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub auto_promotion_seconds: Option<i32>,
    /// How long the previous active revision keeps its pods once the release is complete
    /// (post-promotion analysis passed), so clients that resolved it late still reach running
    /// pods. Default 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub scale_down_delay_seconds: Option<i32>,
    /// After an abort, keep the new revision's pods this many seconds before scaling them
    /// down (no traffic reaches them meanwhile, except through the preview Service). Default
    /// 30; 0 scales them down at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub abort_scale_down_delay_seconds: Option<i32>,
    /// The local platform (`vigil run`, `vigil demo`): the proxy serves the active revision on
    /// `listen` and the preview on `previewListen`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<LocalBlueGreen>,
}

/// The built-in proxy of `vigil run` for a blue-green release.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalBlueGreen {
    /// Address serving the active revision (production traffic), e.g. `127.0.0.1:8080`.
    pub listen: String,
    /// Address serving the preview (the new revision before promotion; the active one when
    /// no release is in flight), e.g. `127.0.0.1:8081`. Without it the preview is not
    /// reachable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_listen: Option<String>,
}

//! The Rollout resource: a workload released step by step with analysis at each gate.
// Several `printcolumn(type_ = "string")` entries look like duplicated attributes to clippy.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::analysis::{AnalysisPhase, Argument};
use super::schema::conditions_schema;

/// A workload released as a canary: traffic moves to the new version step by step, and
/// statistical analysis at each gate promotes it or rolls it back on its own.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "vigil.dev",
    version = "v1alpha1",
    kind = "Rollout",
    namespaced,
    status = "RolloutStatus",
    shortname = "vro",
    category = "vigil",
    doc = "A workload released as a canary: traffic moves to the new version step by step, and statistical analysis at each gate promotes or rolls it back.",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(
        name = "Desired",
        type_ = "integer",
        json_path = ".spec.replicas",
        description = "Replicas wanted"
    ),
    printcolumn(
        name = "Current",
        type_ = "integer",
        json_path = ".status.replicas",
        description = "Replicas running, all revisions"
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Progressing, Paused, Healthy, Degraded or Aborted"
    ),
    printcolumn(
        name = "Step",
        type_ = "string",
        json_path = ".status.step",
        description = "Current step out of all steps"
    ),
    printcolumn(
        name = "Weight",
        type_ = "integer",
        json_path = ".status.canaryWeight",
        description = "Percent of traffic on the canary"
    ),
    printcolumn(
        name = "Message",
        type_ = "string",
        json_path = ".status.message",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct RolloutSpec {
    /// Number of pods wanted. Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub replicas: Option<i32>,
    /// Label selector of the pods; it must match the template's labels.
    pub selector: LabelSelector,
    /// The pod template. A change of it starts a new rollout: its hash names the new revision.
    /// Exactly one of `template` and `workloadRef` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    // Boxed: an inline `PodTemplateSpec` is ~1.8 KiB even when absent, in every cached Rollout.
    pub template: Option<Box<PodTemplateSpec>>,
    /// An existing Deployment whose pod template this Rollout releases, instead of
    /// `template` (as Argo Rollouts' `workloadRef`): vigil runs the Deployment's template in
    /// its own revisions (named by the same hash an inline template would have), a change of
    /// the Deployment's template starts a new rollout, and `scaleDown` says whether the
    /// Deployment's own pods give way. Exactly one of `template` and `workloadRef` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_ref: Option<WorkloadRef>,
    /// Old revisions (ReplicaSets) kept for rollback beyond the stable and canary. Default 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub revision_history_limit: Option<i32>,
    /// Pause the rollout where it is. Traffic weights stay as they are.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
    /// A step that makes no progress for this many seconds (pods never ready, router never
    /// converging) marks the rollout Degraded with the reason. Default 600.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub progress_deadline_seconds: Option<i32>,
    /// Seconds a new pod must have been ready, without any of its containers crashing, before
    /// it counts as available (as Argo Rollouts' and Deployments' `minReadySeconds`): vigil
    /// sets it on every revision's ReplicaSet and counts only available pods as ready, so a
    /// step, a weight increase or a scale-down waits for it. 0..=3600; default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 3600))]
    pub min_ready_seconds: Option<i32>,
    /// How the new version is released.
    pub strategy: RolloutStrategy,
    /// How many finished AnalysisRuns of this Rollout are kept (as Argo Rollouts'
    /// `spec.analysis`); older ones are deleted, oldest first, so releases do not pile runs up
    /// in the cluster. A run still running, one the status shows, or one of the release in
    /// flight is never deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<AnalysisRunStrategy>,
}

/// Most finished AnalysisRuns of each kind a Rollout may keep (`successfulRunHistoryLimit`,
/// `unsuccessfulRunHistoryLimit`): each is an object in the cluster and in the controller's
/// cache.
pub const MAX_RUN_HISTORY_LIMIT: i32 = 100;

/// The AnalysisRun history limits of a Rollout (Argo Rollouts' `AnalysisRunStrategy`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisRunStrategy {
    /// Successful AnalysisRuns kept, newest first; older ones are deleted. 0..=100; default 5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub successful_run_history_limit: Option<i32>,
    /// Unsuccessful AnalysisRuns (Failed, Error, Inconclusive, or Terminated before a verdict)
    /// kept, newest first; older ones are deleted. 0..=100; default 5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub unsuccessful_run_history_limit: Option<i32>,
}

/// A reference to the Deployment whose pod template a Rollout releases.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadRef {
    /// `apps/v1`, the only API version supported.
    pub api_version: String,
    /// `Deployment`, the only kind supported.
    pub kind: String,
    /// Name of the Deployment, in the Rollout's namespace.
    pub name: String,
    /// Whether the Deployment's own pods give way to the Rollout's: `never` (default, the
    /// Deployment is left alone), `onsuccess` (scaled to 0 once the Rollout is Healthy) or
    /// `progressively` (scaled down as the Rollout's pods become ready: replicas wanted minus
    /// ready Rollout pods). vigil only ever scales the Deployment down, never up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down: Option<ScaleDown>,
}

/// When the Deployment behind `workloadRef` is scaled down (Argo Rollouts' names).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ScaleDown {
    /// The Deployment is left as it is.
    #[default]
    #[serde(rename = "never")]
    Never,
    /// The Deployment is scaled to 0 once the Rollout is Healthy.
    #[serde(rename = "onsuccess")]
    OnSuccess,
    /// The Deployment is scaled down as the Rollout's pods become ready.
    #[serde(rename = "progressively")]
    Progressively,
}

/// The release strategy: exactly one of `canary` and `blueGreen` (neither is a canary
/// without steps: the new version replaces the old at once).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStrategy {
    /// Canary release: a share of traffic goes to the new version, step by step.
    #[serde(default, skip_serializing_if = "CanaryStrategy::is_unset")]
    pub canary: CanaryStrategy,
    /// Blue-green release: the new version runs beside the active one behind a preview
    /// Service, then the active Service switches to it at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blue_green: Option<super::blue_green::BlueGreenStrategy>,
}

/// A canary release.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryStrategy {
    /// Service whose selector vigil points at the stable revision's pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_service: Option<String>,
    /// Service whose selector vigil points at the canary revision's pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_service: Option<String>,
    /// How traffic is split. Without it the replica ratio approximates the weight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_routing: Option<TrafficRouting>,
    /// The ordered steps. After the last one the canary becomes the stable version.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<CanaryStep>,
    /// Analysis that runs in the background from `startingStep` until promotion; a Failed
    /// result aborts the rollout at any step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<BackgroundAnalysis>,
    /// After an abort, keep the canary's pods this many seconds before scaling them down
    /// (traffic leaves them at once). Default 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub abort_scale_down_delay_seconds: Option<i32>,
    /// How long revisions that no longer receive traffic (the previous stable after a
    /// promotion, a canary replaced by a newer template) keep their pods once traffic
    /// verifiably left them, so that a gateway applying the route change late still reaches
    /// running pods. Default 30 with `trafficRouting.gatewayAPI`; 0 otherwise (the local proxy
    /// switches at once, and without a router Kubernetes drains endpoints itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub scale_down_delay_seconds: Option<i32>,
    /// HTTP calls that gate the release (`pre-rollout`, `confirm-rollout`,
    /// `confirm-traffic-increase`, `confirm-promotion`), roll it back (`rollback`), or hear
    /// about it (`post-rollout`, `event`): Flagger's webhooks. At most 20.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub webhooks: Vec<super::webhook::Webhook>,
    /// With `trafficRouting`: scale the stable revision down as traffic leaves it (to the
    /// share of `spec.replicas` the router still sends it, once the router reports that
    /// weight) instead of keeping it at full size until promotion; saves capacity, at the cost
    /// of an abort that must scale the stable back up before traffic can return (vigil lowers
    /// the weight only as the stable's pods become ready). As Argo Rollouts'. Default false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dynamic_stable_scale: bool,
    /// Without a router (the replica ratio is the weight): how many pods above
    /// `spec.replicas` the two revisions may run together while the canary grows, as a count
    /// or a percent of `spec.replicas` rounded up (e.g. `1` or `"25%"`). When neither this nor
    /// `maxUnavailable` is set the canary gets its pods at once and the stable shrinks as they
    /// become ready; when one is set the other defaults to `"25%"`, as in Argo Rollouts.
    /// `maxSurge` and `maxUnavailable` cannot both be 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_surge: Option<k8s_openapi::apimachinery::pkg::util::intstr::IntOrString>,
    /// Without a router: how many of `spec.replicas` may be unavailable (not ready) while the
    /// canary grows, as a count or a percent of `spec.replicas` rounded down (e.g. `0` or
    /// `"25%"`); see `maxSurge` for the defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<k8s_openapi::apimachinery::pkg::util::intstr::IntOrString>,
    /// Labels and annotations on the canary revision's pods while it is the canary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_metadata: Option<super::scaling::PodMetadata>,
    /// Labels and annotations on the stable revision's pods; a promoted canary's pods get
    /// them (and lose `canaryMetadata`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_metadata: Option<super::scaling::PodMetadata>,
    /// A fair baseline for analysis: while an analysis step or the background analysis runs,
    /// vigil runs a fresh ReplicaSet of the *stable* template, sized like the canary and given
    /// the same share of traffic, so templates compare canary and baseline pods of the same
    /// age and count instead of the long-running stable (Kayenta's guidance).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<Baseline>,
}

impl CanaryStrategy {
    /// No field set: what an absent `canary` reads as.
    pub fn is_unset(&self) -> bool {
        *self == CanaryStrategy::default()
    }
}

/// The fair baseline of a canary (`canary.baseline`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Baseline {
    /// Run the baseline. Its revision is `<stable revision>-baseline` (pods labelled
    /// `vigil.dev/revision: <stable revision>-baseline` and `vigil.dev/role: baseline`), passed
    /// to templates as the built-in argument `baseline-revision`. Without a traffic router its
    /// pods take their share of traffic by their count; with the local proxy it gets the
    /// canary's weight (at most what the canary leaves), taken from the stable's; with the
    /// Gateway API it needs `service`. Other routers cannot split three ways yet and are
    /// refused.
    #[serde(default)]
    pub enabled: bool,
    /// Service whose selector vigil points at the baseline revision's pods (like
    /// `stableService` and `canaryService`). Required with `trafficRouting.gatewayAPI`: the
    /// HTTPRoute must list it as a backendRef in every rule that routes to the stable and
    /// canary Services, and vigil sets its weight (the canary's while the baseline runs,
    /// taken from the stable's; 0 otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
}

/// Traffic routing. At most one router is set; none means replica-ratio approximation.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrafficRouting {
    /// Gateway API: vigil sets the weights of the stable and canary backendRefs of an
    /// HTTPRoute, and nothing else of the route.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "gatewayAPI"
    )]
    pub gateway_api: Option<GatewayApiRouting>,
    /// Istio: vigil sets the weights of the stable and canary destinations of VirtualService
    /// HTTP routes (with `destinationRule`, it also points the stable and canary subsets at
    /// the revisions' pods), and nothing else of those objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub istio: Option<super::istio::IstioRouting>,
    /// NGINX Ingress: vigil clones the stable Ingress into a canary Ingress it owns, with the
    /// `canary` and `canary-weight` annotations, and deletes it when the weight is back to 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nginx: Option<super::NginxRouting>,
    /// SMI (Linkerd's SMI extension, Open Service Mesh): vigil creates and owns a TrafficSplit
    /// of the root Service with the stable and canary Services as backends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smi: Option<super::SmiRouting>,
    /// Traefik: vigil sets the weights of the stable and canary Services in a TraefikService,
    /// and nothing else of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traefik: Option<super::TraefikRouting>,
    /// The built-in weighted proxy of `vigil run` (the local platform).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<LocalRouting>,
    /// The routes vigil creates and owns on the router for `setHeaderRoute` and
    /// `setMirrorRoute` steps, in precedence order (the first listed is matched first). Every
    /// route a step names must be listed; vigil removes them all at the end of a release and
    /// on abort.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub managed_routes: Vec<ManagedRoute>,
}

/// A route vigil owns on the router, named by `setHeaderRoute` / `setMirrorRoute` steps.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManagedRoute {
    /// The route's name: lowercase letters, digits and `-`, at most 63 characters.
    pub name: String,
}

/// Gateway API HTTPRoute routing.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayApiRouting {
    /// Name of the HTTPRoute in the Rollout's namespace. Its rules must have backendRefs to
    /// `stableService` and `canaryService`.
    #[serde(rename = "httpRoute")]
    pub http_route: String,
}

/// The local platform's built-in proxy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalRouting {
    /// Address the proxy listens on, e.g. `127.0.0.1:8080`.
    pub listen: String,
}

/// One step. Exactly one field is set.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryStep {
    /// Send this percent of traffic (0..=100) to the canary. The step completes once the
    /// router reports the weight and the canary's pods are ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_weight: Option<i32>,
    /// Wait: for `duration`, or until promoted when no duration is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause: Option<PauseStep>,
    /// Run analysis and wait for its verdict: Successful moves on, Failed aborts,
    /// Inconclusive pauses with the reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<AnalysisStep>,
    /// Send the requests whose headers match to the canary only, whatever the weight (testers
    /// reach the canary at weight 0). Without `match` the route is removed. The step completes
    /// once the router reports the route as asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_header_route: Option<SetHeaderRoute>,
    /// Copy a share of the matching requests to the canary; the copies' responses are
    /// discarded. Without `match` the route is removed. The step completes once the router
    /// reports the route as asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_mirror_route: Option<SetMirrorRoute>,
    /// Run this many canary pods from this step on, whatever the weight (needs
    /// `trafficRouting`): `replicas`, `weight` (percent of `spec.replicas`), or
    /// `matchTrafficWeight: true` to follow the weight again. The step completes once the
    /// canary's pods are ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_canary_scale: Option<super::scaling::SetCanaryScale>,
}

/// A `setHeaderRoute` step.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SetHeaderRoute {
    /// The route, one of `trafficRouting.managedRoutes`.
    pub name: String,
    /// Header conditions, all of which a request must meet to reach the canary. Empty or
    /// absent: the route is removed.
    #[serde(default, rename = "match", skip_serializing_if = "Vec::is_empty")]
    pub match_: Vec<HeaderRoutingMatch>,
}

/// One header condition of a `setHeaderRoute` step.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeaderRoutingMatch {
    /// The header's name, e.g. `x-canary`.
    pub header_name: String,
    /// How its value is matched: exactly one of `exact`, `prefix`, `regex`.
    pub header_value: StringMatch,
}

/// How a value is matched: exactly one of the three is set.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StringMatch {
    /// The whole value equals this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    /// The value starts with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// The value matches this regular expression (RE2 syntax, as Envoy and the Gateway API
    /// use), checked and size-bounded by validation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

/// A `setMirrorRoute` step.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SetMirrorRoute {
    /// The route, one of `trafficRouting.managedRoutes`.
    pub name: String,
    /// The requests to mirror: those meeting any one entry (every condition of an entry must
    /// hold). Empty or absent: the route is removed.
    #[serde(default, rename = "match", skip_serializing_if = "Vec::is_empty")]
    pub match_: Vec<RouteMatch>,
    /// Percent (0..=100) of the matching requests copied to the canary. Default 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub percentage: Option<i32>,
}

/// One entry of a `setMirrorRoute` match: every condition set must hold.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteMatch {
    /// The HTTP method, e.g. `exact: GET`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<StringMatch>,
    /// The request path, e.g. `prefix: /api`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<StringMatch>,
    /// Headers, by name.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub headers: std::collections::BTreeMap<String, StringMatch>,
}

/// A pause step.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PauseStep {
    /// How long to wait, e.g. `5m`. Without it the rollout waits for `vigil promote`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(ms|s|m|h))+$"))]
    pub duration: Option<String>,
}

/// Analysis run inline as a step.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisStep {
    /// Templates whose metrics make up the run.
    pub templates: Vec<TemplateRef>,
    /// Arguments passed to the templates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<Argument>,
}

/// Background analysis.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackgroundAnalysis {
    /// Templates whose metrics make up the run.
    pub templates: Vec<TemplateRef>,
    /// Arguments passed to the templates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<Argument>,
    /// Index of the step at which the background analysis starts. Default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub starting_step: Option<i32>,
}

/// A reference to an AnalysisTemplate or ClusterAnalysisTemplate.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateRef {
    /// The template's name.
    pub template_name: String,
    /// Refer to a ClusterAnalysisTemplate instead of an AnalysisTemplate in the namespace.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cluster_scope: bool,
}

/// The lifecycle phase of a Rollout.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum RolloutPhase {
    /// Moving through the steps.
    #[default]
    Progressing,
    /// Waiting: a pause step, an Inconclusive analysis, or `spec.paused`.
    Paused,
    /// All traffic on one revision, which is the stable one.
    Healthy,
    /// Rolled back (a Failed analysis or a missed progress deadline), or the spec is invalid;
    /// the stable version serves. `message` says why.
    Degraded,
    /// Stopped by a person (`vigil abort`); the stable version serves.
    Aborted,
}

/// Why a rollout is paused.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum PauseReason {
    /// A `pause` step.
    CanaryPauseStep,
    /// An analysis could not decide; a person should look, then promote or abort.
    InconclusiveAnalysis,
    /// `vigil pause` or `spec.paused`.
    UserPaused,
    /// A blue-green release waits before the switch: for `vigil promote`
    /// (`autoPromotionEnabled: false`) or `autoPromotionSeconds`.
    BlueGreenPause,
}

/// One reason the rollout is paused, and since when.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PauseCondition {
    /// Why.
    pub reason: PauseReason,
    /// Since when.
    pub start_time: Time,
}

/// A summary of an AnalysisRun, shown on the Rollout.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisRunSummary {
    /// The AnalysisRun's name.
    pub name: String,
    /// Its phase.
    pub phase: AnalysisPhase,
    /// Its message: the deciding metric and reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Each metric's latest verdict and reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<MetricSummary>,
    /// The latest round's score when the run's templates set `scoring`, e.g.
    /// `50 Fail (round 2)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<String>,
}

impl AnalysisRunSummary {
    /// The summary of the run `name`: its phase (Pending before it has one) and message, each
    /// metric's phase with its latest value and reason, and its score.
    pub fn of(name: &str, status: &super::AnalysisRunStatus) -> Self {
        AnalysisRunSummary {
            name: name.to_owned(),
            phase: status.phase.unwrap_or(AnalysisPhase::Pending),
            message: status.message.clone(),
            metrics: status
                .metric_results
                .iter()
                .map(|result| {
                    let last = result.measurements.last();
                    MetricSummary {
                        name: result.name.clone(),
                        phase: result.phase,
                        value: last.and_then(|m| m.value.clone()),
                        reason: last
                            .and_then(|m| m.reason.clone())
                            .or_else(|| result.message.clone()),
                    }
                })
                .collect(),
            score: status.score.as_ref().map(|score| {
                format!(
                    "{} {:?} (round {})",
                    score.score, score.classification, score.round
                )
            }),
        }
    }
}

/// A metric's latest verdict, shown on the Rollout.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricSummary {
    /// The metric's name.
    pub name: String,
    /// Its phase.
    pub phase: AnalysisPhase,
    /// The latest value, as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What the controller observed and decided. Progress lives here, never in memory: a
/// controller restarted at any instant resumes from status.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    /// Progressing, Paused, Healthy, Degraded or Aborted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<RolloutPhase>,
    /// Why the rollout is in its phase, in words: the failing metric and its reason, the
    /// invalid field, what it waits for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Index of the current step in `spec.strategy.canary.steps`; equal to the number of steps
    /// once all are done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_step_index: Option<i32>,
    /// The step in progress for display, counted from 1: `3/7` is the third of seven
    /// (`steps[2]`); `7/7` once all are done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// When the current step started; timed pauses and deadlines count from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_step_started_at: Option<Time>,
    /// Hash of the pod template that is stable (serving when no canary runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_revision: Option<String>,
    /// Hash of the pod template being released.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_revision: Option<String>,
    /// Percent of traffic on the canary, as set on the router.
    #[serde(default)]
    pub canary_weight: i32,
    /// Pods of all revisions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Ready pods of all revisions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// Label selector as a string, for the scale subresource (`kubectl scale`, HPA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// Kubernetes conditions: `Progressing`, `Available`, `Paused`, `InvalidSpec`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// Why the rollout is paused, if it is.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pause_conditions: Vec<PauseCondition>,
    /// True once the rollout was aborted (by a Failed analysis, a missed progress deadline or
    /// `vigil abort`), until `vigil retry` or a new pod template. `vigil abort` sets it to true
    /// (the controller then records `abortedAt`); `vigil retry` sets it back to false while
    /// `abortedAt` stays, which the controller reads as "start again from step 0".
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub abort: bool,
    /// When the abort happened; the canary is scaled down `abortScaleDownDelaySeconds` later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aborted_at: Option<Time>,
    /// When the revisions that no longer receive traffic are scaled to 0
    /// (`scaleDownDelaySeconds` after traffic left them); absent when there are none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down_at: Option<Time>,
    /// Skip the remaining steps and analysis and promote the canary (set by
    /// `vigil promote --full`; the controller clears it once the canary is stable).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub promote_full: bool,
    /// Finish the step with this index and move on: end a pause, accept an Inconclusive
    /// analysis, stop waiting for a running analysis or a converging weight. `vigil promote`
    /// writes the `currentStepIndex` it saw, so a request that arrives after the rollout moved
    /// on by itself is stale and ignored rather than skipping the next step. The controller
    /// clears it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub promote_step: Option<i32>,
    /// How many canaries were started (new pod templates and retries) over the Rollout's life;
    /// never reset. It is part of AnalysisRun names, so a restarted canary never reads the
    /// verdict of an earlier attempt's run.
    #[serde(default, skip_serializing_if = "is_zero")]
    #[schemars(range(min = 0))]
    pub canary_attempt: i32,
    /// The analysis of the current step, with each metric's verdict and reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_analysis: Option<AnalysisRunSummary>,
    /// The background analysis, with each metric's verdict and reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub background_analysis: Option<AnalysisRunSummary>,
    /// The webhook gates the current canary attempt passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhooks: Option<super::webhook::WebhookStatus>,
}

fn is_zero(value: &i32) -> bool {
    *value == 0
}

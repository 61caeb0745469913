//! The rollout state machine: pure, no I/O, no clock.
//!
//! [`step`] takes what the Rollout asks for (`spec`), what the controller recorded last time
//! (`status`), what the I/O shell saw in the cluster ([`Observation`]) and the current time, and
//! returns a [`Decision`]: the next status, the [`Effect`]s that move the cluster toward it, and
//! when to look again. Progress lives in `status` only, so a controller killed at any instant
//! re-derives the same decision from the status it finds.
//!
//! # How the I/O shell uses it
//!
//! One reconcile of one Rollout:
//!
//! 1. **Observe.** Fill an [`Observation`]: the Rollout's name and `metadata.generation`;
//!    with `spec.workloadRef`, the Deployment it names (`workload`: its pod template and
//!    replicas; not found is a spec problem at `spec.workloadRef.name`);
//!    `desired_revision = desired_revision(&spec, workload)` (the hash of `spec.template` or of
//!    the Deployment's template: the same template names the same revision); every revision (ReplicaSet) of the
//!    Rollout with its `spec.replicas` and ready pods; the canary weight the router reports
//!    (`None` with no router or when it cannot be read); which revision each of
//!    `stableService` / `canaryService` selects; every AnalysisRun owned by the Rollout
//!    (name, phase, message, per-metric summaries); and, from the **dereference** step, the
//!    problems only the shell can find: a template that does not exist, templates and
//!    arguments that do not make a run. The spec's own rules are not the shell's business:
//!    [`step`] runs [`validate_spec`], the one validator, itself.
//! 2. **Decide.** `let decision = step(&spec, &status, &observation, now)`.
//! 3. **Act.** Execute `decision.effects` **in order**, stopping at the first failure (then do
//!    not write status; retry with backoff: the same status gives the same effects again, and
//!    every effect is idempotent). Effects are ordered for safety: services that move the stable
//!    service, then weight decreases, revision settings and scale-ups, canary-service moves,
//!    weight increases, scale-downs, AnalysisRun terminations and creations, revision
//!    and AnalysisRun deletions, events.
//!    `CreateAnalysisRun` must treat "already exists" as success. `ScaleRevision` of a revision
//!    that has no ReplicaSet yet creates it from the [`released_template`] (only the desired
//!    revision and the stable's baseline are ever created; a baseline from the stable
//!    revision's template, see [`baseline`]). `ScaleDownWorkload` patches the Deployment's replicas guarded
//!    by the replicas it observed.
//! 4. **Record.** Replace `.status` with `decision.status` using the `resourceVersion` that was
//!    observed (optimistic concurrency): a conflict means the CLI wrote a request meanwhile, so
//!    observe again instead of overwriting it.
//! 5. **Wait.** Requeue at `decision.requeue_at` when set; otherwise wait for a watch event
//!    (Rollout, ReplicaSets, AnalysisRuns, the router object).
//!
//! # User requests live in status
//!
//! Requests that are not part of the desired state are written by the CLI into status fields,
//! as Argo Rollouts does, so they survive a controller restart and are consumed exactly once
//! (the controller clears them in the same status write that acts on them):
//!
//! | command | writes | effect |
//! | --- | --- | --- |
//! | `vigil pause` / `resume` | `spec.paused` true / false | phase Paused, nothing moves / continue |
//! | `vigil promote` | `status.promoteStep = status.currentStepIndex` (as read) | the current step is finished; a stale index is ignored |
//! | `vigil promote --full` | `status.promoteFull = true` | skip the remaining steps and analysis |
//! | `vigil abort` | `status.abort = true` | traffic back to stable, phase Aborted |
//! | `vigil retry` | `status.abort = false` (leave `abortedAt`) | start again from step 0 |
//! | `vigil retry --analysis` | deletes the undecided AnalysisRun | the rollout creates it anew |
//!
//! A request that would do nothing (promote with no canary, abort of a rolled-back canary,
//! retry of one that was not rolled back, pause when paused, …) is refused with the reason by
//! [`refuse_no_op`], on both platforms.
//!
//! `promoteStep` carries the index the user saw because Argo's "increment currentStepIndex"
//! promote races with the controller and can skip a step the user never looked at.
//!
//! # Semantics
//!
//! * **First version**: no stable yet → the desired revision becomes stable at full scale, no
//!   canary. Phase Healthy once its pods are ready (Progressing until then).
//! * **New pod template** (desired ≠ stable): a canary starts from step 0 against the stable.
//!   A newer template during a rollout restarts from step 0 against the same stable; the old
//!   canary is scaled to 0 once the router reports weight 0, its runs are terminated. A template
//!   set back to the stable one drops the canary at once.
//! * **Weights.** Let `W` be the weight of the last `setWeight` step at or before the current
//!   step (0 if none; 100 while promoting) and `R = spec.replicas`. The canary runs
//!   `ceil(R × W / 100)` pods (at least 1 when `W > 0`).
//!   *With a router* the stable keeps `R` pods (an abort is instant) and the router weight is
//!   raised to `W` only once the canary's pods are ready (no traffic to pods that cannot serve);
//!   lowering is immediate. *Without a router* the replica ratio is the weight: the stable runs
//!   `R − min(ready canary pods, canary pods wanted)` (it shrinks only as canary pods become
//!   ready, so capacity never dips), but at least 1 while `W < 100`, so a small weight never
//!   sends all traffic to the canary (with `R = 1` and `W = 10`: one pod each).
//!   `status.canaryWeight` is the weight as set (with a router: as sent to it).
//!   The scaling controls ([`scaling`]) refine this: with a router, the last `setCanaryScale`
//!   at or before the current step sets the canary's pods instead (`replicas`, capped at `R`,
//!   or `weight`% of `R` rounded up; `matchTrafficWeight` ends it; a `setCanaryScale` step
//!   completes once those pods are ready), never fewer than 1 while `W > 0`, and none of it
//!   once promoting. With `dynamicStableScale` the stable runs `ceil(R × (100 − w) / 100)`
//!   where `w` is the lower of the weight set and the weight the router reports (it shrinks
//!   only once traffic left it). Without a router, with `maxSurge` / `maxUnavailable`, each
//!   decision moves the canary and the stable toward those counts within the limits, from
//!   the replicas and ready pods observed ([`scaling`]'s `surge_step`). `R` is read at every
//!   decision, so a change of `spec.replicas` mid-release (an HPA, through the scale
//!   subresource) rescales both roles.
//! * **Revision settings.** The stable's and the canary's ReplicaSets carry their role's
//!   metadata (`stableMetadata` / `canaryMetadata`) and `minReadySeconds`;
//!   `SetRevisionSettings` is emitted, before the scale-ups, while
//!   [`Observation::revision_settings`] differs, so a promoted canary gets `stableMetadata`.
//!   The shell counts a pod ready only once available (`minReadySeconds`).
//! * **`setWeight`** completes once the router reports `W` and the canary's pods are ready.
//! * **`setHeaderRoute` / `setMirrorRoute`** set (or, without `match`, remove) a route named
//!   in `trafficRouting.managedRoutes`; the routes wanted at a step are those the steps up to
//!   and including it left in place ([`wanted_routes`]). While any is wanted the canary runs
//!   at least one pod, and a route is sent only once a canary pod is ready. The step completes
//!   once the router reads back exactly the routes wanted (and the weight and pods of the
//!   step converge). Every managed route is removed on abort (with the weight, first) and
//!   once the canary is promoted to stable.
//! * **`pause`** with a duration completes at `currentStepStartedAt + duration` (`requeue_at`
//!   is that instant); without one it waits for `vigil promote` (`CanaryPauseStep`).
//! * **`analysis`** creates the run `<rollout>-<revision>-<attempt>-step<index>` (deterministic,
//!   so creating it twice is harmless) and waits. Successful → next step; Failed → abort
//!   (Degraded, the message names the failing metric and its reason); Inconclusive → pause
//!   (`InconclusiveAnalysis`, the reason in `message`): promote continues, abort aborts.
//!   **Error and Terminated are treated like Inconclusive**: a run that could not measure or
//!   was stopped has no verdict, and a person should decide (Argo aborts on Error, which turns
//!   a Prometheus outage into a rollback).
//! * **Background analysis** `<rollout>-<revision>-<attempt>-bg<step>` runs from `startingStep`
//!   until the canary is stable. Failed aborts at any step, even while paused. Inconclusive /
//!   Error / Terminated pause the rollout; promote accepts that verdict, finishes the current
//!   step and starts a fresh background run. `promote --full` skips it.
//! * **Abort** (Failed analysis, missed deadline, or `vigil abort`): router weight 0 at once
//!   (the first effect), running analysis terminated, the stable back to `R` pods, and the
//!   canary scaled to 0 `abortScaleDownDelaySeconds` (default 30) after `abortedAt` (without a
//!   router at once: its pods are its traffic share). Phase Degraded (analysis, deadline) or
//!   Aborted (user). Rolling back never waits on an analysis, a pause or an invalid spec.
//!   With `dynamicStableScale` the stable may have given up pods, so the weight goes back
//!   only as fast as the stable's ready pods can carry it (`100 − floor(100 × ready / R)`,
//!   never raised), the stable scaling up in the same decision; the canary is scaled to 0
//!   once the weight is 0 and the router reports it (no `abortScaleDownDelaySeconds`).
//! * **Retry** starts again from step 0 with a new attempt number (fresh AnalysisRuns).
//! * **Run history** (`spec.analysis`, see [`run_history`]): finished AnalysisRuns beyond
//!   `successfulRunHistoryLimit` / `unsuccessfulRunHistoryLimit` (default 5 each) are deleted,
//!   oldest first (`DeleteAnalysisRun`), never one still wanted, shown in the status observed
//!   or decided, or made by the canary attempt in flight: the limits apply to the runs of
//!   releases that ended. Not while the rollout holds (paused, invalid spec).
//! * **Promote** finishes the current step; **promote --full** skips the remaining steps.
//!   **Promotion** after the last step: the canary scales to `R`, weight 100 once ready, then
//!   the stable service is pointed at it, the weight goes back to 0 (both services now select
//!   the new revision), the old stable is scaled to 0 once the router reports 0 and
//!   `scaleDownDelaySeconds` more have passed (default 30 with a Gateway API router, whose
//!   data plane may apply the route late; 0 otherwise), recorded as `scaleDownAt`. The same
//!   holds for a canary replaced by a newer template. Phase Healthy does not wait for it.
//! * **Progress deadline** (`progressDeadlineSeconds`, default 600): a `setWeight` step or the
//!   promotion that does not converge within it from the step's start aborts as Degraded with
//!   `ProgressDeadlineExceeded`. Pauses and analysis do not count; after `resume` the clock
//!   of a converging step starts again.
//! * **`spec.paused`**: phase Paused (`UserPaused`); no step moves and no effect is emitted
//!   (weights stay as they are), but aborts still roll back. A new pod template replaces a
//!   canary in flight only once resumed.
//! * **`workloadRef`** (adopting a Deployment): the Deployment's pod template is released
//!   exactly like an inline one (its first version becomes stable at full scale; a change of
//!   it starts a canary). `scaleDown` decides what the Deployment keeps: `never` (default)
//!   everything; `onsuccess` 0 once the phase is Healthy; `progressively`
//!   `replicas − ready pods of all the Rollout's revisions` (at least 0). The effect
//!   `ScaleDownWorkload` comes after every other scale, and only ever lowers the Deployment's
//!   observed replicas: a Deployment scaled down by hand is never scaled back up, nor after
//!   an abort (the Rollout's stable serves, not the Deployment). While the Deployment still
//!   runs pods, `stableService` (which may select them too) is pointed at the stable revision
//!   only once all its pods are ready. A missing Deployment, or one whose template breaks the
//!   template rules (no containers, labels the selector does not match), is an invalid spec:
//!   nothing is created or scaled down.
//! * **Invalid spec**: phase Degraded, condition `InvalidSpec` True, `message` names each field
//!   and problem; nothing moves toward the canary (no effects), the stable keeps serving; the
//!   shell may wait for the next spec change.
//! * **Conditions** `Progressing`, `Available`, `Paused`, `InvalidSpec`: `lastTransitionTime`
//!   moves only when a condition's status changes.
//! * **Webhooks** (`spec.strategy.canary.webhooks`, see [`webhooks`]): the machine never
//!   calls one. It lists the calls it wants in [`Decision::webhook_calls`] and reads the
//!   latest answers in [`Observation::webhook_answers`], by key (hook, canary attempt, step).
//!   Gates hold the rollout (phase Progressing, `message` "waiting for TYPE hook NAME: last
//!   answer") until every hook of the type answered 2xx: `pre-rollout` then `confirm-rollout`
//!   at step 0 before the canary has pods or weight; `confirm-traffic-increase` at each
//!   `setWeight` that raises the weight (held at the weight before it); `confirm-promotion`
//!   after the last step (held at the last step's weight). What passed is recorded in
//!   `status.webhooks` for the attempt (so a restart neither skips nor re-asks a gate), and
//!   a gate that opens restarts the step's clock (waiting is no progress). Gates are asked
//!   and the machine looks again every [`webhooks::WEBHOOK_POLL_INTERVAL`]. A `rollback`
//!   hook is polled while a canary is in flight and not aborted (even while paused); a 2xx
//!   answer aborts as Degraded (`RolledBackByWebhook`). `post-rollout` hooks are notified with
//!   the decision that promotes or aborts, `event` hooks with every Event. Hooks whose own
//!   fields are invalid are never called.
//! * **Blue-green** (`spec.strategy.blueGreen`, exactly one of it and `canary`): the same
//!   machine, with three stages in `currentStepIndex` instead of steps (see the
//!   `blue_green.rs` module docs): 0 `preview` (the new revision at `previewReplicaCount`
//!   behind the preview service, `prePromotionAnalysis`, the `BlueGreenPause` for promote or
//!   `autoPromotionSeconds`), 1 `promoting` (the new revision at `R` pods; the switch once all
//!   are ready), 2 `switched` (both services on the new revision, the stable one kept at `R`
//!   pods, `postPromotionAnalysis`; Failed aborts and the abort's first effect points the
//!   active service back). `activeService` / `previewService` play `stableService` /
//!   `canaryService` ([`service_names`]); no router (no `SetWeight`); `canaryWeight` is 100 once
//!   switched. The aborted new revision keeps its pods `abortScaleDownDelaySeconds` (default
//!   30), the previous one `scaleDownDelaySeconds` (default 30) after the release completes.
//! * **Display**: `step` is the step in progress counted from 1 over the number of steps
//!   (`3/7`: the third of seven, `steps[2]`), the way events count completed steps
//!   (`step 3/7 (pause 1m) completed`); `7/7` once all are done. Messages use the same count. For a blue-green release
//!   it is the stage's name, `stable` with none in flight.
//! * **Fair baseline** (`canary.baseline.enabled`, see [`baseline`]): while an analysis is
//!   wanted (an `analysis` step, or the background analysis once active) a revision
//!   [`baseline::baseline_revision`] of the stable runs `ceil(R × B / 100)` pods, where
//!   `B = min(W, 100 − W)` is its share. `ScaleRevision` of it creates it from the *stable*
//!   revision's template. Without a router its ready pods come out of the stable's count;
//!   with a router that reports a baseline weight (the local proxy) `SetBaselineWeight B` is
//!   raised once its pods are ready and lowered first. With the Gateway API the baseline
//!   Service (`canary.baseline.service`) is pointed at the baseline revision
//!   (`PointBaselineService`, only while its weight is 0) before its weight is raised; with
//!   `dynamicStableScale` the baseline's share comes out of the stable's pods too, and its
//!   weight drops back only as fast as the stable's ready pods can carry it. A run not created yet waits until the
//!   baseline converged. When no analysis is wanted (another step, promotion, abort) its
//!   weight goes to 0 and then its pods.
//!
//! # Errors
//!
//! There is no error type: [`step`] cannot fail. Input it cannot use (an invalid spec, a
//! status edited by hand, an index out of range) becomes a phase and a message in status.
//!
//! # Time
//!
//! Kubernetes serializes `Time` with whole seconds, so every instant recorded in status is
//! truncated to the second; comparisons use the exact `now`. A status that went through JSON
//! therefore gives the same decision as the one returned.

pub mod baseline;
mod conditions;
mod effects;
mod hash;
mod machine;
mod request_checks;
mod requests;
mod routes;
pub mod run_history;
pub mod scaling;
mod validate;
mod validate_blue_green;
mod validate_istio;
mod validate_routes;
mod validate_scaling;
mod validate_webhooks;
mod version;
pub mod webhooks;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::PodTemplateSpec;

use crate::api::{AnalysisRunSummary, Argument, RolloutSpec, RolloutStatus, TemplateRef};
use crate::traffic::{HeaderRoute, ManagedRoutes, MirrorRoute};

pub(crate) use hash::fnv1a64;
pub use hash::{MAX_LABEL_VALUE_LEN, MAX_NAME_LEN, fit_name, template_hash};
pub use machine::step;
pub use request_checks::{refuse_no_op, undecided_run};
pub use requests::{RequestError, StatusRequest, UserRequest, status_request};
pub use routes::{DEFAULT_MIRROR_PERCENTAGE, route_names, wanted_routes};
pub use validate::{validate_spec, validate_workload_template};
pub use validate_routes::{
    MAX_HEADER_NAME_LEN, MAX_MANAGED_ROUTES, MAX_MATCH_HEADERS, MAX_MATCH_REGEX_COMPILED,
    MAX_MATCH_REGEX_LEN, MAX_MATCH_VALUE_LEN, MAX_ROUTE_MATCHES, MAX_ROUTE_NAME_LEN,
    compile_match_regex,
};
pub use validate_scaling::{
    MAX_ANNOTATION_VALUE_LEN, MAX_MIN_READY_SECONDS, MAX_POD_METADATA_ENTRIES,
};
pub use version::{MAX_VERSION_LABEL, VERSION_ANNOTATION, version_label};

/// What the I/O shell saw in the cluster for one Rollout, just before calling [`step`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observation {
    /// `metadata.name` of the Rollout; it prefixes AnalysisRun names.
    pub rollout_name: String,
    /// `metadata.generation` of the Rollout; recorded as `observedGeneration`.
    pub generation: Option<i64>,
    /// [`template_hash`] of `spec.template`: the revision the spec asks for.
    pub desired_revision: String,
    /// Every revision (ReplicaSet) of the Rollout that exists.
    pub revisions: Vec<RevisionObservation>,
    /// The canary weight the traffic router reports, read back; `None` when there is no
    /// router or it could not be read (a setWeight step then waits).
    pub router_canary_weight: Option<i32>,
    /// The baseline's weight the router reports (see [`baseline`]); `None` when the router
    /// has no baseline split (the replica ratio, a router that cannot split three ways) or it
    /// could not be read.
    pub router_baseline_weight: Option<i32>,
    /// The managed header and mirror routes the router reports, read back; `None` when it
    /// could not be read (a `setHeaderRoute` / `setMirrorRoute` step then waits). A router
    /// that holds none, or a Rollout without `managedRoutes`, reports `Some` of none.
    pub router_managed_routes: Option<ManagedRoutes>,
    /// Which revision the stable and canary services select.
    pub services: ServiceSelection,
    /// Every AnalysisRun owned by the Rollout, as seen; the state machine picks its own by
    /// name.
    pub analysis_runs: Vec<AnalysisRunSummary>,
    /// When each AnalysisRun of `analysis_runs` was created, by name: the oldest finished
    /// runs beyond the history limits ([`run_history`]) are deleted first. A run missing here
    /// counts as the oldest.
    pub analysis_run_created_at: std::collections::BTreeMap<String, Timestamp>,
    /// Problems found while dereferencing the spec (templates that do not exist, an analysis
    /// that cannot start, a `workloadRef` Deployment that does not exist), each at its field.
    /// The spec's own rules are [`validate_spec`]'s, which [`step`] runs itself.
    pub spec_problems: Vec<SpecProblem>,
    /// The Deployment `spec.workloadRef` names, as read by the dereference step; `None`
    /// without `workloadRef` or when it was not found (then `spec_problems` says so).
    pub workload: Option<WorkloadObservation>,
    /// The latest answers to the webhook calls earlier decisions asked to poll, by key (see
    /// [`webhooks`]); a gate or rollback switch without an answer here has not answered yet.
    pub webhook_answers: Vec<webhooks::WebhookAnswer>,
    /// What each revision's ReplicaSet carries besides the template, as vigil last set it
    /// (role metadata, `minReadySeconds`), by revision; a revision not listed carries nothing.
    pub revision_settings: std::collections::BTreeMap<String, scaling::RevisionSettings>,
}

/// The Deployment behind `spec.workloadRef`, as seen.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WorkloadObservation {
    /// Its pod template: the template the Rollout releases (`desired_revision` is its
    /// [`template_hash`]), checked by [`validate_workload_template`].
    pub template: PodTemplateSpec,
    /// Its `spec.replicas` (1 when unset, the API server's default).
    pub replicas: i32,
}

/// The pod template `spec` releases: `spec.template`, or the template of the Deployment
/// `spec.workloadRef` names (`workload`, as the dereference step read it); `None` when neither
/// is known (the spec is invalid then).
pub fn released_template<'a>(
    spec: &'a RolloutSpec,
    workload: Option<&'a WorkloadObservation>,
) -> Option<&'a PodTemplateSpec> {
    spec.template.as_deref().or(workload.map(|w| &w.template))
}

/// The revision `spec` asks for: the [`template_hash`] of its [`released_template`], so a
/// Deployment's template names the same revision as the same template inline. Empty when the
/// template is unknown (the spec is invalid then, and nothing is created).
pub fn desired_revision(spec: &RolloutSpec, workload: Option<&WorkloadObservation>) -> String {
    released_template(spec, workload)
        .map(template_hash)
        .unwrap_or_default()
}

/// The Services vigil points at revisions: (`stableService`, `canaryService`) of a canary, or
/// (`activeService`, `previewService`) of a blue-green release, which play the same parts (the
/// active one selects the stable revision, the preview one the new revision).
pub fn service_names(spec: &RolloutSpec) -> (Option<&str>, Option<&str>) {
    match &spec.strategy.blue_green {
        Some(bg) => (bg.active_service.as_deref(), bg.preview_service.as_deref()),
        None => (
            spec.strategy.canary.stable_service.as_deref(),
            spec.strategy.canary.canary_service.as_deref(),
        ),
    }
}

/// One revision (ReplicaSet) as seen.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RevisionObservation {
    /// The revision's template hash.
    pub revision: String,
    /// Pods asked for (`spec.replicas` of the ReplicaSet).
    pub replicas: i32,
    /// Pods ready.
    pub ready_replicas: i32,
    /// When the revision was created; the oldest unused revisions are deleted first.
    pub created_at: Option<Timestamp>,
}

/// The revisions the services select, as seen; `None` when the service does not exist, is not
/// configured, or selects no vigil revision.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceSelection {
    /// Revision selected by `stableService`.
    pub stable: Option<String>,
    /// Revision selected by `canaryService`.
    pub canary: Option<String>,
    /// Revision selected by `canary.baseline.service` (see [`baseline`]).
    pub baseline: Option<String>,
}

/// A problem with the spec: the field's path and what is wrong (the type template validation
/// uses too, so lint reports both alike).
pub type SpecProblem = crate::analysis::template::Problem;

/// Something the I/O shell must do. Effects are idempotent: executing one twice is harmless.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// Scale the revision's ReplicaSet (create it from `spec.template` if it does not exist).
    ScaleRevision {
        /// Template hash of the revision.
        revision: String,
        /// Pods wanted.
        replicas: i32,
    },
    /// Set the router's canary weight (percent); the stable gets the rest.
    SetWeight {
        /// Percent of traffic to the canary service.
        canary_weight: i32,
    },
    /// Set the router's baseline weight (percent, see [`baseline`]): the stable gets what the
    /// canary and the baseline leave. Only for a router that reports one
    /// ([`Observation::router_baseline_weight`]).
    SetBaselineWeight {
        /// Percent of traffic to the baseline.
        baseline_weight: i32,
    },
    /// Put the managed header route in place on the router (replacing one of its name).
    SetHeaderRoute {
        /// The route, as the steps so far left it.
        route: HeaderRoute,
    },
    /// Remove the managed header route `name` from the router; absent counts as success.
    RemoveHeaderRoute {
        /// The route's name.
        name: String,
    },
    /// Put the managed mirror route in place on the router (replacing one of its name).
    SetMirrorRoute {
        /// The route, as the steps so far left it.
        route: MirrorRoute,
    },
    /// Remove the managed mirror route `name` from the router; absent counts as success.
    RemoveMirrorRoute {
        /// The route's name.
        name: String,
    },
    /// Create an AnalysisRun; "already exists" counts as success.
    CreateAnalysisRun {
        /// The run's name (deterministic).
        name: String,
        /// Step or background, for labels.
        kind: AnalysisKind,
        /// Templates whose metrics make up the run.
        templates: Vec<TemplateRef>,
        /// Arguments from the Rollout, to resolve and pass to the templates.
        args: Vec<Argument>,
        /// The stable revision, the baseline to compare with.
        stable_revision: String,
        /// The canary revision under analysis.
        canary_revision: String,
    },
    /// Terminate a running AnalysisRun (its result no longer matters).
    TerminateAnalysisRun {
        /// The run's name.
        name: String,
    },
    /// Delete a finished AnalysisRun beyond the history limits (see [`run_history`]); it is
    /// neither running nor shown in status. Absent counts as success.
    DeleteAnalysisRun {
        /// The run's name.
        name: String,
    },
    /// Point the services' selectors at revisions; `None` leaves that service as it is.
    PointServices {
        /// Revision `stableService` should select.
        stable: Option<String>,
        /// Revision `canaryService` should select.
        canary: Option<String>,
    },
    /// Point `canary.baseline.service`'s selector at the baseline revision (see
    /// [`baseline`]); only while the router sends it no traffic.
    PointBaselineService {
        /// Revision the baseline Service should select.
        revision: String,
    },
    /// Delete an unused old revision (beyond `revisionHistoryLimit`); it has no pods.
    DeleteRevision {
        /// Template hash of the revision.
        revision: String,
    },
    /// Scale the Deployment behind `spec.workloadRef` down from `observed` replicas (as
    /// seen; the shell guards the write with it, so a concurrent change by someone else is
    /// not overwritten) to `replicas`. Only ever downwards.
    ScaleDownWorkload {
        /// `spec.replicas` of the Deployment as observed.
        observed: i32,
        /// Replicas wanted, lower than `observed`.
        replicas: i32,
    },
    /// Make a revision's ReplicaSet carry `settings`: its role's labels and annotations on its
    /// pod template and on its running pods (taking off those of the role it had before) and
    /// `minReadySeconds`. A revision without a ReplicaSet yet (only ever one a `ScaleRevision`
    /// of the same decision scales up next) is created with them and 0 replicas, so its first
    /// pods carry them.
    SetRevisionSettings {
        /// Template hash of the revision.
        revision: String,
        /// What it carries.
        settings: scaling::RevisionSettings,
    },
    /// Record a Kubernetes Event on the Rollout (emitted on transitions only).
    Event {
        /// Normal or Warning.
        type_: EventType,
        /// CamelCase reason, e.g. `RolloutAborted`.
        reason: String,
        /// What happened, in words.
        message: String,
    },
}

/// Which analysis an AnalysisRun is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnalysisKind {
    /// The `analysis` step at this index.
    Step {
        /// Index of the step in `spec.strategy.canary.steps`.
        index: i32,
    },
    /// The background analysis.
    Background,
    /// A blue-green release's `prePromotionAnalysis`.
    PrePromotion,
    /// A blue-green release's `postPromotionAnalysis`.
    PostPromotion,
}

impl AnalysisKind {
    /// The field of the Rollout that declares this analysis.
    pub fn path(self) -> String {
        match self {
            AnalysisKind::Step { index } => format!("spec.strategy.canary.steps[{index}].analysis"),
            AnalysisKind::Background => "spec.strategy.canary.analysis".to_owned(),
            AnalysisKind::PrePromotion => "spec.strategy.blueGreen.prePromotionAnalysis".to_owned(),
            AnalysisKind::PostPromotion => {
                "spec.strategy.blueGreen.postPromotionAnalysis".to_owned()
            }
        }
    }
}

/// One analysis a Rollout declares: a step's or the background one.
#[derive(Clone, Copy, Debug)]
pub struct DeclaredAnalysis<'a> {
    /// Which one.
    pub kind: AnalysisKind,
    /// The templates it runs.
    pub templates: &'a [TemplateRef],
    /// The arguments it passes.
    pub args: &'a [Argument],
}

impl DeclaredAnalysis<'_> {
    /// The references to templates for which `exists` is false, as problems at their fields,
    /// worded by `missing`.
    pub fn missing_templates(
        &self,
        exists: impl Fn(&TemplateRef) -> bool,
        missing: impl Fn(&TemplateRef) -> String,
    ) -> Vec<SpecProblem> {
        let path = self.kind.path();
        self.templates
            .iter()
            .enumerate()
            .filter(|(_, template)| !exists(template))
            .map(|(j, template)| SpecProblem {
                path: format!("{path}.templates[{j}].templateName"),
                message: missing(template),
            })
            .collect()
    }
}

/// Every analysis `spec` declares, steps first, then the background one, then a blue-green
/// release's pre- and post-promotion analyses.
pub fn declared_analyses(spec: &RolloutSpec) -> impl Iterator<Item = DeclaredAnalysis<'_>> {
    let canary = &spec.strategy.canary;
    let steps = canary.steps.iter().enumerate().filter_map(|(index, step)| {
        step.analysis.as_ref().map(|a| DeclaredAnalysis {
            kind: AnalysisKind::Step {
                index: i32::try_from(index).unwrap_or(i32::MAX),
            },
            templates: &a.templates,
            args: &a.args,
        })
    });
    let background = canary.analysis.as_ref().map(|a| DeclaredAnalysis {
        kind: AnalysisKind::Background,
        templates: &a.templates,
        args: &a.args,
    });
    let blue_green = spec.strategy.blue_green.iter().flat_map(|bg| {
        [
            (AnalysisKind::PrePromotion, &bg.pre_promotion_analysis),
            (AnalysisKind::PostPromotion, &bg.post_promotion_analysis),
        ]
        .into_iter()
        .filter_map(|(kind, analysis)| {
            analysis.as_ref().map(|a| DeclaredAnalysis {
                kind,
                templates: &a.templates,
                args: &a.args,
            })
        })
    });
    steps.chain(background).chain(blue_green)
}

/// The type of a Kubernetes Event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    /// Expected progress.
    Normal,
    /// Something went wrong or needs a person.
    Warning,
}

/// What [`step`] decided.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// The status to record.
    pub status: RolloutStatus,
    /// What to do, in order.
    pub effects: Vec<Effect>,
    /// The earliest instant at which time alone changes the decision (a pause ends, an aborted
    /// canary is scaled down, a progress deadline passes); `None` when only a watch event can.
    pub requeue_at: Option<Timestamp>,
    /// Webhooks to call: gates and rollback switches to poll (their answers come back in
    /// [`Observation::webhook_answers`]) and notifications to send. Never part of `effects`:
    /// a call neither blocks nor fails the reconcile.
    pub webhook_calls: Vec<webhooks::WebhookCall>,
}

/// Name of the AnalysisRun of the `analysis` step at `index`, for the given canary attempt.
/// Shortened with [`fit_name`] when a long Rollout name would make it exceed
/// [`MAX_NAME_LEN`].
pub fn step_run_name(rollout: &str, canary_revision: &str, attempt: i32, index: i32) -> String {
    fit_name(
        &format!("{rollout}-{canary_revision}-{attempt}-step{index}"),
        MAX_NAME_LEN,
    )
}

/// Name of a blue-green release's pre-promotion AnalysisRun for a canary attempt, shortened
/// like [`step_run_name`].
pub fn pre_promotion_run_name(rollout: &str, revision: &str, attempt: i32) -> String {
    fit_name(&format!("{rollout}-{revision}-{attempt}-pre"), MAX_NAME_LEN)
}

/// Name of a blue-green release's post-promotion AnalysisRun, like [`pre_promotion_run_name`].
pub fn post_promotion_run_name(rollout: &str, revision: &str, attempt: i32) -> String {
    fit_name(
        &format!("{rollout}-{revision}-{attempt}-post"),
        MAX_NAME_LEN,
    )
}

/// Name of the background AnalysisRun started at step `starting_step` of a canary attempt,
/// shortened like [`step_run_name`].
pub fn background_run_name(
    rollout: &str,
    canary_revision: &str,
    attempt: i32,
    starting_step: i32,
) -> String {
    fit_name(
        &format!("{rollout}-{canary_revision}-{attempt}-bg{starting_step}"),
        MAX_NAME_LEN,
    )
}

#[cfg(test)]
#[path = "workload_tests.rs"]
mod workload_tests;

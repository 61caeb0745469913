//! The transitions. See the module docs for the semantics.

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};

use crate::api::duration::{format_duration, parse_duration};
use crate::api::{
    AnalysisPhase, AnalysisRunSummary, AnalysisStep, BlueGreenStrategy, CanaryStep, PauseReason,
    PauseStep, RolloutPhase, RolloutSpec, RolloutStatus,
};

use super::conditions::{
    AVAILABLE, INVALID_SPEC, PAUSED, PROGRESSING, WantedCondition, merge_conditions, merge_pauses,
    pause_reason_name,
};
use super::effects::{
    Intent, Plan, WantedRun, build_effects, leftover_revisions, traffic_left,
    workload_replicas_wanted,
};
use super::routes::{route_names, wanted_routes};
use super::run_history::{RunHistoryLimits, runs_in_status};
use super::scaling::{self, Role, revision_settings};
use super::validate::{validate_spec, validate_workload_template};
use super::validate_routes::sets_route;
use super::{
    AnalysisKind, Decision, Effect, EventType, Observation, SpecProblem, background_run_name,
    step_run_name,
};
use crate::traffic::{ManagedRoutes, RouterKind};

#[path = "blue_green.rs"]
mod blue_green;
#[path = "machine_webhooks.rs"]
mod webhooks;

const DEFAULT_REPLICAS: i32 = 1;
const DEFAULT_PROGRESS_DEADLINE_SECONDS: i64 = 600;
const DEFAULT_ABORT_SCALE_DOWN_DELAY_SECONDS: i64 = 30;
const DEFAULT_SCALE_DOWN_DELAY_SECONDS: i32 = 30;
const DEFAULT_REVISION_HISTORY_LIMIT: usize = 10;

/// Decides the next status of a Rollout, the effects that get the cluster there, and when to
/// look again. Pure: the same inputs always give the same [`Decision`].
pub fn step(
    spec: &RolloutSpec,
    status: &RolloutStatus,
    observation: &Observation,
    now: Timestamp,
) -> Decision {
    let mut machine = Machine::new(spec, status, observation, now);
    let mut next = status.clone();
    let intent = machine.reconcile(&mut next);
    machine.finish(next, intent)
}

/// The problems of the Deployment `spec.workloadRef` names: its template's (the rules of an
/// inline template), or that the shell did not read it and did not say why.
fn workload_problems(spec: &RolloutSpec, obs: &Observation) -> Vec<SpecProblem> {
    if spec.workload_ref.is_none() {
        return Vec::new();
    }
    match &obs.workload {
        Some(workload) => validate_workload_template(spec, &workload.template),
        None if obs
            .spec_problems
            .iter()
            .any(|p| p.path.starts_with("spec.workloadRef")) =>
        {
            Vec::new()
        }
        None => vec![SpecProblem {
            path: "spec.workloadRef".to_owned(),
            message: "the Deployment was not read, so its pod template is unknown".to_owned(),
        }],
    }
}

/// What one pass over the current step decided.
enum StepOutcome {
    /// The step is finished: move to the next one (the text is added to the event).
    Completed(&'static str),
    /// The machine moved to another step itself (promote --full): look again.
    Moved,
    /// Stay on this step; the cluster takes this shape.
    Stay(Intent),
}

/// Whether the analysis of the current step or the background one stands in the way.
enum Background {
    Clear,
    /// Inconclusive, Error or Terminated: a person decides.
    Undecided(String),
}

struct Machine<'a> {
    spec: &'a RolloutSpec,
    previous: &'a RolloutStatus,
    obs: &'a Observation,
    now: Timestamp,
    /// `now` as recorded in status: whole seconds, like Kubernetes' `Time` serializes.
    recorded: Time,
    steps: &'a [CanaryStep],
    /// `spec.strategy.blueGreen`: the release follows its stages instead of `steps`.
    blue_green: Option<&'a BlueGreenStrategy>,
    replicas: i32,
    router: bool,
    problems: Vec<SpecProblem>,
    events: Vec<Effect>,
    pauses: Vec<PauseReason>,
    requeue_at: Option<Timestamp>,
    abort_reason: Option<&'static str>,
    step_run: Option<WantedRun>,
    background_run: Option<WantedRun>,
    /// Webhooks to poll (gates, rollback switches), decided while reconciling.
    calls: Vec<webhooks::WantedCall<'a>>,
    /// The canary was promoted or rolled back in this decision: post-rollout hooks are due.
    rollout_finished: bool,
}

impl<'a> Machine<'a> {
    fn new(
        spec: &'a RolloutSpec,
        previous: &'a RolloutStatus,
        obs: &'a Observation,
        now: Timestamp,
    ) -> Self {
        // The one validator, plus what only the shell could find (dereferencing).
        let mut problems = validate_spec(spec);
        problems.extend(obs.spec_problems.iter().cloned());
        problems.extend(workload_problems(spec, obs));
        problems.sort();
        problems.dedup();
        let routing = spec.strategy.canary.traffic_routing.as_ref();
        Machine {
            spec,
            previous,
            obs,
            now,
            recorded: Time(Timestamp::from_second(now.as_second()).unwrap_or(now)),
            steps: &spec.strategy.canary.steps,
            blue_green: spec.strategy.blue_green.as_ref(),
            replicas: spec.replicas.unwrap_or(DEFAULT_REPLICAS).max(0),
            router: RouterKind::of(routing).sets_weights(),
            problems,
            events: Vec::new(),
            pauses: Vec::new(),
            requeue_at: None,
            abort_reason: None,
            step_run: None,
            background_run: None,
            calls: Vec::new(),
            rollout_finished: false,
        }
    }

    fn reconcile(&mut self, s: &mut RolloutStatus) -> Intent {
        s.observed_generation = self.obs.generation;
        self.refresh_run_summaries(s);
        let desired = self.obs.desired_revision.clone();
        let invalid = !self.problems.is_empty();
        match s.stable_revision.clone() {
            None => {
                if invalid {
                    return self.invalid(s);
                }
                s.stable_revision = Some(desired.clone());
                self.clear_canary(s);
                s.current_step_index = Some(self.step_count());
                self.event(
                    EventType::Normal,
                    "InitialDeployment",
                    format!("revision {desired} is the first version: deployed as stable at full scale, without a canary"),
                );
            }
            Some(stable) if stable == desired => {
                if let Some(canary) = s.canary_revision.clone() {
                    self.clear_canary(s);
                    s.current_step_index = Some(self.step_count());
                    self.event(
                        EventType::Normal,
                        "RolloutCanceled",
                        format!("the pod template is back to stable revision {stable}: canary {canary} dropped"),
                    );
                }
            }
            Some(stable) => {
                // While the spec is paused nothing moves: a new template does not replace the
                // canary in flight (whose traffic would otherwise stay on a revision status no
                // longer names) until the rollout is resumed.
                let replacing_while_paused = self.spec.paused && s.canary_revision.is_some();
                if s.canary_revision.as_deref() != Some(desired.as_str()) && !replacing_while_paused
                {
                    if invalid {
                        return self.invalid(s);
                    }
                    let replaced = s.canary_revision.clone();
                    self.start_canary(s, &desired);
                    let (reason, message) = match replaced {
                        Some(old) => (
                            "RolloutRestarted",
                            format!(
                                "revision {desired} replaces canary {old}: restarting from step 0 against stable {stable}"
                            ),
                        ),
                        None => (
                            "RolloutStarted",
                            format!("canary {desired} started against stable {stable}"),
                        ),
                    };
                    self.event(EventType::Normal, reason, message);
                }
            }
        }
        if s.canary_revision.is_none() {
            return self.idle(s, invalid);
        }
        self.canary(s, invalid)
    }

    /// Copies what was observed of the runs named in status into status.
    fn refresh_run_summaries(&self, s: &mut RolloutStatus) {
        for summary in [&mut s.step_analysis, &mut s.background_analysis]
            .into_iter()
            .flatten()
        {
            if let Some(seen) = self.observed_run(&summary.name) {
                *summary = seen.clone();
            }
        }
    }

    fn observed_run(&self, name: &str) -> Option<&'a AnalysisRunSummary> {
        self.obs.analysis_runs.iter().find(|run| run.name == name)
    }

    fn clear_canary(&self, s: &mut RolloutStatus) {
        s.canary_revision = None;
        s.abort = false;
        s.aborted_at = None;
        s.promote_full = false;
        s.promote_step = None;
        s.canary_weight = 0;
        s.webhooks = None;
    }

    fn start_canary(&self, s: &mut RolloutStatus, revision: &str) {
        self.clear_canary(s);
        s.canary_revision = Some(revision.to_owned());
        s.canary_attempt = s.canary_attempt.saturating_add(1);
        self.enter_step(s, 0);
        s.step_analysis = None;
        s.background_analysis = None;
    }

    fn enter_step(&self, s: &mut RolloutStatus, index: usize) {
        s.current_step_index = Some(i32::try_from(index).unwrap_or(i32::MAX));
        s.current_step_started_at = Some(self.recorded.clone());
    }

    /// No canary: the stable serves everything.
    fn idle(&mut self, s: &mut RolloutStatus, invalid: bool) -> Intent {
        self.clear_canary(s);
        if invalid {
            return self.invalid(s);
        }
        let stable = s.stable_revision.clone().unwrap_or_default();
        let ready = self.ready(&stable);
        if ready >= self.replicas {
            s.phase = Some(RolloutPhase::Healthy);
            s.message = Some(format!(
                "revision {stable} is stable and serves all traffic"
            ));
        } else {
            s.phase = Some(RolloutPhase::Progressing);
            s.message = Some(format!(
                "waiting for the stable revision {stable}: {ready}/{} pods ready",
                self.replicas
            ));
        }
        Intent::Stable
    }

    fn canary(&mut self, s: &mut RolloutStatus, invalid: bool) -> Intent {
        if !s.abort && s.aborted_at.is_some() && !invalid {
            self.retry(s);
        }
        if s.abort || s.aborted_at.is_some() {
            if s.abort && s.aborted_at.is_none() {
                let message = format!(
                    "aborted by a user at step {}: stable revision {} serves all traffic",
                    self.step_display(s),
                    s.stable_revision.as_deref().unwrap_or_default()
                );
                self.abort(s, RolloutPhase::Aborted, "RolloutAborted", message);
            }
            return self.aborted(s, invalid);
        }
        if let Some(failure) = self.failed_analysis(s) {
            self.abort(s, RolloutPhase::Degraded, "AnalysisFailed", failure);
            return self.aborted(s, invalid);
        }
        if !invalid && let Some(why) = self.rollback_requested(s) {
            self.abort(s, RolloutPhase::Degraded, "RolledBackByWebhook", why);
            return self.aborted(s, invalid);
        }
        if invalid {
            return self.invalid(s);
        }
        if self.spec.paused {
            return self.user_paused(s);
        }
        if let Some(bg) = self.blue_green {
            return self.blue_green(s, bg);
        }
        self.progress(s)
    }

    fn retry(&mut self, s: &mut RolloutStatus) {
        s.aborted_at = None;
        s.canary_attempt = s.canary_attempt.saturating_add(1);
        s.canary_weight = 0;
        s.promote_step = None;
        s.step_analysis = None;
        s.background_analysis = None;
        s.webhooks = None;
        self.enter_step(s, 0);
        self.event(
            EventType::Normal,
            "RolloutRetried",
            format!(
                "retrying canary {} from step 0",
                s.canary_revision.as_deref().unwrap_or_default()
            ),
        );
    }

    fn abort(
        &mut self,
        s: &mut RolloutStatus,
        phase: RolloutPhase,
        reason: &'static str,
        message: String,
    ) {
        s.abort = true;
        s.aborted_at = Some(self.recorded.clone());
        s.phase = Some(phase);
        // GitOps: the spec still asks for what was just rejected; say so, and what settles it.
        let message = if phase == RolloutPhase::Degraded {
            format!(
                "{message}. The spec still names the rejected revision {}: revert it in Git (or \
                 apply the previous version) to settle, or `vigil retry {}` to try it again",
                s.canary_revision.as_deref().unwrap_or_default(),
                self.obs.rollout_name
            )
        } else {
            message
        };
        s.message = Some(message.clone());
        self.rollout_finished = true;
        self.abort_reason = Some(match reason {
            "ProgressDeadlineExceeded" => "ProgressDeadlineExceeded",
            _ => "RolloutAborted",
        });
        self.event(EventType::Warning, reason, message);
    }

    /// The aborted canary: traffic on the stable, pods scaled down when the delay is over.
    fn aborted(&mut self, s: &mut RolloutStatus, invalid: bool) -> Intent {
        let previous_weight = s.canary_weight;
        s.promote_full = false;
        s.promote_step = None;
        s.canary_weight = 0;
        self.step_run = None;
        self.background_run = None;
        if !matches!(
            s.phase,
            Some(RolloutPhase::Degraded | RolloutPhase::Aborted)
        ) {
            s.phase = Some(RolloutPhase::Aborted);
        }
        if invalid {
            self.mark_invalid(s);
        }
        let aborted_at = s.aborted_at.as_ref().map_or(self.now, |t| t.0);
        let delay = match self.blue_green {
            Some(bg) => Self::blue_green_abort_delay(bg),
            None => self
                .spec
                .strategy
                .canary
                .abort_scale_down_delay_seconds
                .map_or(DEFAULT_ABORT_SCALE_DOWN_DELAY_SECONDS, i64::from),
        }
        .max(0);
        let scale_down_at = add_seconds(aborted_at, delay);
        if self.dynamic_stable_scale() {
            return self.aborted_dynamic(s, previous_weight);
        }
        // Without a router the canary's pods are its traffic share: they go at once (a
        // blue-green preview takes no traffic of the active service: its delay holds).
        let scale_down_canary =
            (!self.router && self.blue_green.is_none()) || self.now >= scale_down_at;
        if !scale_down_canary {
            self.requeue(scale_down_at);
        }
        Intent::Aborted {
            scale_down_canary,
            canary_weight: 0,
        }
    }

    /// The aborted canary with `dynamicStableScale`: the stable scales back up first, and
    /// traffic returns to it only as its pods become ready; the canary's pods go once the
    /// router reports that none is left on it.
    fn aborted_dynamic(&mut self, s: &mut RolloutStatus, previous_weight: i32) -> Intent {
        let stable = s.stable_revision.clone().unwrap_or_default();
        // A baseline still on the router holds its share until the canary's is back (see
        // `baseline_drain`): the failed canary's traffic leaves first.
        let on_baseline = self.obs.router_baseline_weight.unwrap_or(0).max(0);
        let weight = (scaling::abort_weight(self.replicas, self.ready(&stable), 100) - on_baseline)
            .clamp(0, previous_weight.max(0));
        s.canary_weight = weight;
        Intent::Aborted {
            scale_down_canary: weight == 0 && self.obs.router_canary_weight == Some(0),
            canary_weight: weight,
        }
    }

    /// Whether the stable scales with the traffic it gets (`dynamicStableScale` with a
    /// router; validation refuses it without one).
    fn dynamic_stable_scale(&self) -> bool {
        self.router && self.spec.strategy.canary.dynamic_stable_scale
    }

    fn failed_analysis(&self, s: &RolloutStatus) -> Option<String> {
        let canary = s.canary_revision.as_deref()?;
        if self.blue_green.is_some() {
            return self.failed_promotion_run(s);
        }
        let index = self.index(s);
        if let Some(run) = &s.step_analysis
            && run.phase == AnalysisPhase::Failed
            && run.name
                == step_run_name(
                    &self.obs.rollout_name,
                    canary,
                    s.canary_attempt,
                    to_i32(index),
                )
        {
            return Some(format!(
                "step analysis failed at step {}: {}; stable revision {} serves all traffic",
                self.step_display(s),
                describe_failure(run),
                s.stable_revision.as_deref().unwrap_or_default()
            ));
        }
        if let Some(run) = &s.background_analysis
            && run.phase == AnalysisPhase::Failed
            && self.background_active(s, index)
            && run.name.starts_with(&self.background_prefix(s))
        {
            return Some(format!(
                "background analysis failed at step {}: {}; stable revision {} serves all traffic",
                self.step_display(s),
                describe_failure(run),
                s.stable_revision.as_deref().unwrap_or_default()
            ));
        }
        None
    }

    fn invalid(&mut self, s: &mut RolloutStatus) -> Intent {
        self.mark_invalid(s);
        Intent::Hold
    }

    fn mark_invalid(&mut self, s: &mut RolloutStatus) {
        let problems: Vec<String> = self.problems.iter().map(ToString::to_string).collect();
        let message = format!(
            "invalid spec: {}; nothing moves until it is fixed",
            problems.join("; ")
        );
        s.phase = Some(RolloutPhase::Degraded);
        s.message = Some(message.clone());
        let was_invalid = self
            .previous
            .conditions
            .iter()
            .any(|c| c.type_ == INVALID_SPEC && c.status == "True");
        if !was_invalid {
            self.event(EventType::Warning, "InvalidSpec", message);
        }
    }

    fn user_paused(&mut self, s: &mut RolloutStatus) -> Intent {
        s.phase = Some(RolloutPhase::Paused);
        s.message = Some(format!(
            "paused by spec.paused at step {}; resume to continue",
            self.step_display(s)
        ));
        self.pauses.push(PauseReason::UserPaused);
        if !self.was_paused_for(PauseReason::UserPaused) {
            self.event(
                EventType::Normal,
                "RolloutPaused",
                format!("paused by spec.paused at step {}", self.step_display(s)),
            );
        }
        Intent::Hold
    }

    fn was_paused_for(&self, reason: PauseReason) -> bool {
        self.previous
            .pause_conditions
            .iter()
            .any(|p| p.reason == reason)
    }

    /// Moves through the steps as far as the observation allows.
    fn progress(&mut self, s: &mut RolloutStatus) -> Intent {
        self.note_resume(s);
        if let Some(intent) = self.rollout_gates(s) {
            return intent;
        }
        // Each pass either stays or moves on by one step; this bound is never reached.
        for _ in 0..(2 * self.steps.len() + 8) {
            let index = self.index(s);
            let outcome = match self.override_step(s, index) {
                Some(outcome) => outcome,
                None => self.current_step(s, index),
            };
            match outcome {
                StepOutcome::Completed(why) => self.advance(s, why),
                StepOutcome::Moved => {}
                StepOutcome::Stay(intent) => return intent,
            }
        }
        Intent::Hold
    }

    /// After `resume`: the event, and a fresh deadline clock for a converging step.
    fn note_resume(&mut self, s: &mut RolloutStatus) {
        if !self.was_paused_for(PauseReason::UserPaused) {
            return;
        }
        let index = self.index(s);
        // The deadline counts time spent converging, not time spent paused.
        if index >= self.steps.len()
            || self.steps[index].set_weight.is_some()
            || self.steps[index].set_canary_scale.is_some()
            || sets_route(&self.steps[index])
        {
            self.enter_step(s, index);
        }
        self.event(
            EventType::Normal,
            "RolloutResumed",
            format!("resumed at step {}", self.step_display(s)),
        );
    }

    /// What decides instead of the step at `index`: an undecided background analysis, a
    /// promote request, or the end of the steps; `None` when the step itself decides.
    fn override_step(&mut self, s: &mut RolloutStatus, index: usize) -> Option<StepOutcome> {
        let count = self.steps.len();
        if let Background::Undecided(reason) = self.background(s, index) {
            return Some(self.undecided_background(s, index, reason));
        }
        if s.promote_full && index < count {
            self.event(
                EventType::Normal,
                "RolloutPromotedFull",
                format!(
                    "promote --full at step {}: skipping the remaining steps",
                    self.step_display(s)
                ),
            );
            self.step_run = None;
            self.enter_step(s, count);
            return Some(StepOutcome::Moved);
        }
        if index >= count {
            if let Some(intent) = self.promotion_gate(s) {
                return Some(StepOutcome::Stay(intent));
            }
            return Some(StepOutcome::Stay(self.promotion(s)));
        }
        if s.promote_step == Some(to_i32(index)) {
            return Some(StepOutcome::Completed(" (promoted)"));
        }
        None
    }

    /// An undecided background verdict pauses the rollout until a person promotes it.
    fn undecided_background(
        &mut self,
        s: &mut RolloutStatus,
        index: usize,
        reason: String,
    ) -> StepOutcome {
        if s.promote_step != Some(to_i32(index)) {
            let intent = self.pause_for_analysis(s, index, format!("background analysis {reason}"));
            return StepOutcome::Stay(intent);
        }
        // A person accepted the verdict: a fresh run starts from the next step.
        // (`promote --full` needs no such case: it ends the background analysis.)
        s.background_analysis = None;
        self.background_run = None;
        self.event(
            EventType::Normal,
            "AnalysisAccepted",
            format!("background analysis verdict accepted by promote: {reason}"),
        );
        StepOutcome::Completed(" (promoted)")
    }

    /// The step at `index` (in range), by its kind.
    fn current_step(&mut self, s: &mut RolloutStatus, index: usize) -> StepOutcome {
        let steps = self.steps;
        let step = &steps[index];
        let weight = self.weight_at(index);
        if step.set_weight.is_some() {
            let before = index.checked_sub(1).map_or(0, |i| self.weight_at(i));
            if let Some(intent) = self.traffic_gate(s, index, before, weight) {
                return StepOutcome::Stay(intent);
            }
            self.set_weight_step(s, weight)
        } else if let Some(pause) = &step.pause {
            self.pause_step(s, pause, weight)
        } else if let Some(analysis) = &step.analysis {
            self.analysis_step(s, index, analysis, weight)
        } else if sets_route(step) {
            self.route_step(s, index, weight)
        } else if step.set_canary_scale.is_some() {
            self.canary_scale_step(s, index, weight)
        } else {
            // validate_spec rejects a step of no kind; there is nothing to wait for.
            StepOutcome::Completed("")
        }
    }

    /// `setWeight`: done once the canary's pods are ready and the router reports the weight.
    fn set_weight_step(&mut self, s: &mut RolloutStatus, weight: i32) -> StepOutcome {
        let (intent, converged) = self.converge(s, weight);
        if converged {
            return StepOutcome::Completed("");
        }
        StepOutcome::Stay(self.wait_or_deadline(s, intent, format!("setWeight {weight}"), weight))
    }

    /// `setCanaryScale`: done once the canary's pods (as the step scales them) are ready and
    /// the weight converged.
    fn canary_scale_step(
        &mut self,
        s: &mut RolloutStatus,
        index: usize,
        weight: i32,
    ) -> StepOutcome {
        let (intent, converged) = self.converge(s, weight);
        if converged {
            return StepOutcome::Completed("");
        }
        let what = describe_step(&self.steps[index]);
        StepOutcome::Stay(self.wait_or_deadline(s, intent, what, weight))
    }

    /// `setHeaderRoute` / `setMirrorRoute`: done once the router reads back exactly the routes
    /// wanted at this step, with the weight and the canary's pods converged.
    fn route_step(&mut self, s: &mut RolloutStatus, index: usize, weight: i32) -> StepOutcome {
        let (intent, converged) = self.converge(s, weight);
        let wanted = wanted_routes(self.steps, index);
        if converged && self.obs.router_managed_routes.as_ref() == Some(&wanted) {
            return StepOutcome::Completed("");
        }
        let what = describe_step(&self.steps[index]);
        StepOutcome::Stay(self.wait_or_deadline(s, intent, what, weight))
    }

    /// `pause`: done when its duration has passed; without one, it waits for promote.
    fn pause_step(&mut self, s: &mut RolloutStatus, pause: &PauseStep, weight: i32) -> StepOutcome {
        let (intent, _) = self.converge(s, weight);
        let started = self.step_started(s);
        match pause.duration.as_deref().map(parse_duration) {
            Some(Ok(duration)) => {
                let end = add_duration(started, duration);
                if self.now >= end {
                    return StepOutcome::Completed("");
                }
                self.requeue(end);
                let until = Timestamp::from_second(end.as_second()).unwrap_or(end);
                let what = format!("pause {} until {until}", format_duration(duration));
                self.mark_pause_step(s, what);
            }
            // validate_spec rejects a bad duration; waiting for promote is safe.
            Some(Err(_)) | None => {
                self.mark_pause_step(s, "paused until promoted (vigil promote)".into())
            }
        }
        StepOutcome::Stay(intent)
    }

    /// `analysis`: wants its run, then follows the run's phase.
    fn analysis_step(
        &mut self,
        s: &mut RolloutStatus,
        index: usize,
        analysis: &AnalysisStep,
        weight: i32,
    ) -> StepOutcome {
        let (intent, _) = self.converge(s, weight);
        let run = self.want_step_run(s, index, analysis);
        match run.phase {
            AnalysisPhase::Successful => StepOutcome::Completed(""),
            AnalysisPhase::Failed => {
                let message = format!(
                    "step analysis failed at step {}: {}; stable revision {} serves all traffic",
                    self.step_display(s),
                    describe_failure(&run),
                    s.stable_revision.as_deref().unwrap_or_default()
                );
                self.abort(s, RolloutPhase::Degraded, "AnalysisFailed", message);
                StepOutcome::Stay(self.aborted(s, false))
            }
            AnalysisPhase::Inconclusive | AnalysisPhase::Error | AnalysisPhase::Terminated => {
                let reason = describe_undecided(&run);
                StepOutcome::Stay(self.pause_for_analysis(
                    s,
                    index,
                    format!("step analysis {reason}"),
                ))
            }
            AnalysisPhase::Pending | AnalysisPhase::Running => {
                s.phase = Some(RolloutPhase::Progressing);
                s.message = Some(format!(
                    "step {}: waiting for AnalysisRun {} ({:?})",
                    self.step_display(s),
                    run.name,
                    run.phase
                ));
                StepOutcome::Stay(intent)
            }
        }
    }

    /// Records the run of the analysis step at `index` in status and wants it to exist;
    /// returns its summary as last seen.
    fn want_step_run(
        &mut self,
        s: &mut RolloutStatus,
        index: usize,
        analysis: &AnalysisStep,
    ) -> AnalysisRunSummary {
        let canary = s.canary_revision.clone().unwrap_or_default();
        let name = step_run_name(
            &self.obs.rollout_name,
            &canary,
            s.canary_attempt,
            to_i32(index),
        );
        if s.step_analysis.as_ref().is_none_or(|run| run.name != name) {
            s.step_analysis =
                Some(
                    self.observed_run(&name)
                        .cloned()
                        .unwrap_or_else(|| AnalysisRunSummary {
                            name: name.clone(),
                            ..Default::default()
                        }),
                );
        }
        self.step_run = Some(WantedRun {
            name,
            kind: AnalysisKind::Step {
                index: to_i32(index),
            },
            templates: analysis.templates.clone(),
            args: analysis.args.clone(),
        });
        s.step_analysis.clone().unwrap_or_default()
    }

    /// The background analysis: keeps it wanted while active, reports an undecided verdict.
    fn background(&mut self, s: &mut RolloutStatus, index: usize) -> Background {
        self.background_run = None;
        let spec = self.spec;
        let Some(analysis) = &spec.strategy.canary.analysis else {
            return Background::Clear;
        };
        if !self.background_active(s, index) {
            return Background::Clear;
        }
        let prefix = self.background_prefix(s);
        let current = s
            .background_analysis
            .as_ref()
            .filter(|run| run.name.starts_with(&prefix))
            .cloned();
        let run = match current {
            Some(run) => run,
            None => {
                let name = background_run_name(
                    &self.obs.rollout_name,
                    s.canary_revision.as_deref().unwrap_or_default(),
                    s.canary_attempt,
                    to_i32(index),
                );
                let run = self
                    .observed_run(&name)
                    .cloned()
                    .unwrap_or_else(|| AnalysisRunSummary {
                        name,
                        ..Default::default()
                    });
                s.background_analysis = Some(run.clone());
                run
            }
        };
        self.background_run = Some(WantedRun {
            name: run.name.clone(),
            kind: AnalysisKind::Background,
            templates: analysis.templates.clone(),
            args: analysis.args.clone(),
        });
        match run.phase {
            AnalysisPhase::Inconclusive | AnalysisPhase::Error | AnalysisPhase::Terminated => {
                Background::Undecided(describe_undecided(&run))
            }
            _ => Background::Clear,
        }
    }

    fn background_active(&self, s: &RolloutStatus, index: usize) -> bool {
        self.spec
            .strategy
            .canary
            .analysis
            .as_ref()
            .is_some_and(|a| {
                let start = usize::try_from(a.starting_step.unwrap_or(0).max(0)).unwrap_or(0);
                index >= start.min(self.steps.len()) && !s.promote_full
            })
    }

    fn background_prefix(&self, s: &RolloutStatus) -> String {
        format!(
            "{}-{}-{}-bg",
            self.obs.rollout_name,
            s.canary_revision.as_deref().unwrap_or_default(),
            s.canary_attempt
        )
    }

    fn pause_for_analysis(
        &mut self,
        s: &mut RolloutStatus,
        index: usize,
        reason: String,
    ) -> Intent {
        let weight = self.weight_at(index);
        let (intent, _) = self.converge(s, weight);
        let name = &self.obs.rollout_name;
        let message = format!(
            "paused at step {}: {reason}{}; `vigil promote {name}` continues, `vigil abort \
             {name}` rolls back, `vigil retry {name} --analysis` runs the analysis again",
            self.step_display(s),
            no_data_hint(&reason)
        );
        s.phase = Some(RolloutPhase::Paused);
        s.message = Some(message.clone());
        self.pauses.push(PauseReason::InconclusiveAnalysis);
        if !self.was_paused_for(PauseReason::InconclusiveAnalysis) {
            self.event(EventType::Warning, "AnalysisInconclusive", message);
        }
        intent
    }

    fn mark_pause_step(&mut self, s: &mut RolloutStatus, what: String) {
        s.phase = Some(RolloutPhase::Paused);
        s.message = Some(format!("step {}: {what}", self.step_display(s)));
        self.pauses.push(PauseReason::CanaryPauseStep);
    }

    /// After the last step: the canary takes all traffic, then becomes the stable.
    fn promotion(&mut self, s: &mut RolloutStatus) -> Intent {
        let (intent, converged) = self.converge(s, 100);
        if !converged {
            return self.wait_or_deadline(s, intent, "promotion".into(), 100);
        }
        let old = s.stable_revision.clone().unwrap_or_default();
        let new = s.canary_revision.clone().unwrap_or_default();
        s.stable_revision = Some(new.clone());
        self.clear_canary(s);
        self.step_run = None;
        self.background_run = None;
        self.rollout_finished = true;
        self.event(
            EventType::Normal,
            "RolloutCompleted",
            format!("revision {new} promoted to stable (was {old})"),
        );
        self.idle(s, false)
    }

    /// Waits for a converging step, or aborts once the progress deadline has passed.
    fn wait_or_deadline(
        &mut self,
        s: &mut RolloutStatus,
        intent: Intent,
        what: String,
        weight: i32,
    ) -> Intent {
        let seconds = self
            .spec
            .progress_deadline_seconds
            .map_or(DEFAULT_PROGRESS_DEADLINE_SECONDS, i64::from)
            .max(1);
        let deadline = add_seconds(self.step_started(s), seconds);
        let waiting_for = self.waiting_for(s, weight);
        if self.now >= deadline {
            let message = format!(
                "ProgressDeadlineExceeded: step {} ({what}) did not converge within {seconds}s: {waiting_for}; stable revision {} serves all traffic",
                self.step_display(s),
                s.stable_revision.as_deref().unwrap_or_default()
            );
            self.abort(
                s,
                RolloutPhase::Degraded,
                "ProgressDeadlineExceeded",
                message,
            );
            return self.aborted(s, false);
        }
        self.requeue(deadline);
        s.phase = Some(RolloutPhase::Progressing);
        s.message = Some(format!(
            "step {} ({what}): {waiting_for}",
            self.step_display(s)
        ));
        intent
    }

    fn waiting_for(&self, s: &RolloutStatus, weight: i32) -> String {
        let canary = s.canary_revision.as_deref().unwrap_or_default();
        let target = self.canary_target(s, weight);
        let ready = self.ready(canary);
        if ready < target {
            return format!("waiting for canary pods: {ready}/{target} ready");
        }
        match self.obs.router_canary_weight {
            Some(seen) if seen == weight => self.waiting_for_routes(s),
            Some(seen) => {
                format!("waiting for the router to report weight {weight} (reports {seen})")
            }
            None => format!("waiting for the router to report weight {weight} (cannot read it)"),
        }
    }

    /// What the router still lacks of the managed routes wanted at the current step.
    fn waiting_for_routes(&self, s: &RolloutStatus) -> String {
        let wanted = wanted_routes(self.steps, self.index(s));
        match &self.obs.router_managed_routes {
            Some(seen) if *seen == wanted => "converged".into(),
            Some(seen) => format!(
                "waiting for the router to report the managed routes {} (reports {})",
                describe_routes(&wanted),
                describe_routes(seen)
            ),
            None => format!(
                "waiting for the router to report the managed routes {} (cannot read them)",
                describe_routes(&wanted)
            ),
        }
    }

    /// The canary's pods for `weight`: at least one while a managed route sends it traffic.
    fn canary_target(&self, s: &RolloutStatus, weight: i32) -> i32 {
        let index = self.index(s);
        // setCanaryScale needs a router (validation says so) and ends with the steps.
        let scale = (self.router && index < self.steps.len())
            .then(|| scaling::canary_scale_at(self.steps, index))
            .flatten();
        let pods = scaling::canary_pods(self.replicas, weight, scale);
        let routes = !wanted_routes(self.steps, self.index(s)).is_empty();
        if routes && self.replicas > 0 {
            pods.max(1)
        } else {
            pods
        }
    }

    /// The wanted canary shape for `weight`, and whether the cluster has reached it.
    fn converge(&self, s: &mut RolloutStatus, weight: i32) -> (Intent, bool) {
        let canary = s.canary_revision.clone().unwrap_or_default();
        let target = self.canary_target(s, weight);
        let ready = self.ready(&canary);
        // Lowering is always safe; raising waits until the canary's pods can take it.
        let set_weight = if !self.router || weight <= s.canary_weight || ready >= target {
            weight
        } else {
            s.canary_weight
        };
        s.canary_weight = set_weight;
        let (canary_replicas, stable_replicas) = if self.router {
            (target, self.stable_pods_with_router(set_weight))
        } else {
            self.replica_ratio(s, weight, target, ready)
        };
        let converged = ready >= target
            && set_weight == weight
            && (!self.router || self.obs.router_canary_weight == Some(weight));
        (
            Intent::Canary {
                canary_replicas,
                stable_replicas,
                canary_weight: set_weight,
            },
            converged,
        )
    }

    /// With a router the stable keeps `R` pods, or with `dynamicStableScale` the share of the
    /// traffic it still gets: the canary's share is the lower of the weight set and the
    /// weight the router reports, so the stable shrinks only once traffic left it.
    fn stable_pods_with_router(&self, set_weight: i32) -> i32 {
        if !self.dynamic_stable_scale() {
            return self.replicas;
        }
        let on_canary = set_weight.min(self.obs.router_canary_weight.unwrap_or(0));
        scaling::dynamic_stable_pods(self.replicas, on_canary)
    }

    /// Without a router the replica ratio is the weight: (canary, stable) pods for `weight`,
    /// at least one stable pod while `weight < 100`; within `maxSurge` / `maxUnavailable`
    /// when set, else the canary gets `target` at once and the stable shrinks as the canary's
    /// pods become `ready`.
    fn replica_ratio(&self, s: &RolloutStatus, weight: i32, target: i32, ready: i32) -> (i32, i32) {
        let floor = i32::from(weight < 100 && self.replicas > 0);
        let Some(limits) = scaling::surge_limits(&self.spec.strategy.canary, self.replicas) else {
            return (target, (self.replicas - ready.min(target)).max(floor));
        };
        let stable_target = (self.replicas - target).max(floor);
        let pods = |revision: Option<&String>| {
            revision
                .and_then(|name| self.obs.revisions.iter().find(|r| &r.revision == name))
                .map_or_else(scaling::Pods::default, |r| scaling::Pods {
                    replicas: r.replicas,
                    ready: r.ready_replicas,
                })
        };
        let seen = (
            pods(s.canary_revision.as_ref()),
            pods(s.stable_revision.as_ref()),
        );
        scaling::surge_step(limits, self.replicas, (target, stable_target), seen)
    }

    fn advance(&mut self, s: &mut RolloutStatus, why: &str) {
        let index = self.index(s);
        if s.promote_step == Some(to_i32(index)) {
            s.promote_step = None;
        }
        let description = self.steps.get(index).map(describe_step).unwrap_or_default();
        self.step_run = None;
        self.enter_step(s, index + 1);
        self.event(
            EventType::Normal,
            "StepCompleted",
            format!(
                "step {}/{} ({description}) completed{why}",
                index + 1,
                self.steps.len()
            ),
        );
    }

    fn finish(mut self, mut s: RolloutStatus, intent: Intent) -> Decision {
        let (intent, baseline) = self.baseline(&mut s, intent);
        let count = self.steps.len();
        s.pause_conditions = merge_pauses(
            &self.previous.pause_conditions,
            &self.pauses,
            &self.recorded,
        );
        if let Some(index) = s.current_step_index {
            s.step = Some(match self.blue_green {
                Some(_) if s.canary_revision.is_some() => {
                    blue_green::stage_name(blue_green::stage(&s)).to_owned()
                }
                Some(_) => "stable".to_owned(),
                None => step_display(usize::try_from(index.max(0)).unwrap_or(0), count),
            });
        }
        // A promote request for a step the rollout already left is stale.
        if !self.spec.paused && s.promote_step.is_some() && s.promote_step != s.current_step_index {
            s.promote_step = None;
        }
        let total: i32 = self.obs.revisions.iter().map(|r| r.replicas).sum();
        let ready: i32 = self.obs.revisions.iter().map(|r| r.ready_replicas).sum();
        s.replicas = Some(total);
        s.ready_replicas = Some(ready);
        s.selector = selector_string(&self.spec.selector);
        s.conditions = merge_conditions(
            &self.previous.conditions,
            self.wanted_conditions(&s, ready),
            self.obs.generation,
            &self.recorded,
        );

        let canary_strategy = &self.spec.strategy.canary;
        let router_selects = canary_strategy
            .traffic_routing
            .as_ref()
            .filter(|r| RouterKind::of(Some(r)) == RouterKind::Istio)
            .and_then(|r| r.istio.as_ref())
            .is_some_and(|istio| istio.destination_rule.is_some());
        let mut plan = Plan {
            intent,
            stable: s.stable_revision.as_deref(),
            canary: s.canary_revision.as_deref(),
            replicas: self.replicas,
            router: self.router,
            routes: match intent {
                Intent::Canary { .. } => wanted_routes(self.steps, self.index(&s)),
                _ => ManagedRoutes::default(),
            },
            route_names: route_names(self.steps),
            // A router that selects revisions itself (Istio's DestinationRule subsets) is
            // pointed like the Services, in the same safe order.
            stable_service: match self.blue_green {
                Some(bg) => bg.active_service.is_some(),
                None => canary_strategy.stable_service.is_some() || router_selects,
            },
            canary_service: match self.blue_green {
                Some(bg) => bg.preview_service.is_some(),
                None => canary_strategy.canary_service.is_some() || router_selects,
            },
            runs: self
                .step_run
                .clone()
                .into_iter()
                .chain(self.background_run.clone())
                .collect(),
            history_limit: self
                .spec
                .revision_history_limit
                .and_then(|limit| usize::try_from(limit).ok())
                .unwrap_or(DEFAULT_REVISION_HISTORY_LIMIT),
            run_history: RunHistoryLimits::of(self.spec),
            runs_in_status: [
                runs_in_status(self.spec, &self.obs.rollout_name, self.previous),
                runs_in_status(self.spec, &self.obs.rollout_name, &s),
            ]
            .concat(),
            scale_down_others: true,
            baseline,
            baseline_service: super::baseline::service(self.spec).is_some(),
            baseline_drain: self.baseline_drain(&s, intent),
            workload_replicas: self.spec.workload_ref.as_ref().and_then(|workload| {
                workload_replicas_wanted(
                    workload.scale_down.unwrap_or_default(),
                    s.phase == Some(RolloutPhase::Healthy),
                    self.replicas,
                    self.obs,
                )
            }),
            settings: self.settings(s.stable_revision.as_deref(), s.canary_revision.as_deref()),
        };
        let (scale_down_at, due) = self.scale_down_due(s.scale_down_at.clone(), &plan);
        plan.scale_down_others = due;
        s.scale_down_at = scale_down_at;
        let webhook_calls = self.webhook_calls(&s);
        if plan.baseline.as_ref().is_some_and(|b| !b.converged) {
            // Measuring a baseline without its pods or traffic is not a fair comparison: the
            // runs not created yet wait for it (the ones running go on).
            plan.runs.retain(|run| {
                self.obs
                    .analysis_runs
                    .iter()
                    .any(|seen| seen.name == run.name)
            });
        }
        let effects = build_effects(&plan, self.obs, self.events);
        Decision {
            status: s,
            effects,
            requeue_at: self.requeue_at,
            webhook_calls,
        }
    }

    /// What the stable's and the canary's ReplicaSets carry besides the template.
    fn settings<'s>(
        &self,
        stable: Option<&'s str>,
        canary: Option<&'s str>,
    ) -> Vec<(&'s str, scaling::RevisionSettings)> {
        [(stable, Role::Stable), (canary, Role::Canary)]
            .into_iter()
            .filter_map(|(revision, role)| Some((revision?, revision_settings(self.spec, role))))
            .collect()
    }

    /// With `dynamicStableScale`, the baseline weight the router keeps while the stable's
    /// ready pods cannot carry it yet (the baseline going away, or an abort): the stable
    /// scales back up first, and traffic returns to it only as its pods become ready. The
    /// canary's weight is counted at the lower of the weight wanted and reported.
    fn baseline_drain(&self, s: &RolloutStatus, intent: Intent) -> i32 {
        let seen = self.obs.router_baseline_weight.unwrap_or(0);
        if !self.dynamic_stable_scale() || seen <= 0 || self.replicas <= 0 {
            return 0;
        }
        let wanted_canary = match intent {
            Intent::Canary { canary_weight, .. } | Intent::Aborted { canary_weight, .. } => {
                canary_weight
            }
            Intent::Hold | Intent::Stable | Intent::Switched => 0,
        };
        let on_canary = wanted_canary.min(self.obs.router_canary_weight.unwrap_or(0));
        let stable = s.stable_revision.as_deref().unwrap_or_default();
        let uncarried = scaling::abort_weight(self.replicas, self.ready(stable), 100);
        (uncarried - on_canary).clamp(0, seen)
    }

    /// The fair baseline wanted at this decision (see [`super::baseline`]), and the intent
    /// with the stable's share without a router (the baseline's ready pods take their part).
    fn baseline(
        &self,
        s: &mut RolloutStatus,
        intent: Intent,
    ) -> (Intent, Option<super::baseline::WantedBaseline>) {
        let Intent::Canary {
            canary_replicas,
            stable_replicas,
            canary_weight,
        } = intent
        else {
            return (intent, None);
        };
        let pods_for = |weight: i32| scaling::canary_pods(self.replicas, weight, None);
        let moment = super::baseline::Moment {
            stable: s.stable_revision.as_deref(),
            analysing: self.step_run.is_some() || self.background_run.is_some(),
            step_weight: self.weight_at(self.index(s)),
            canary_replicas,
            canary_weight,
            pods_for: &pods_for,
            router: self.router,
        };
        let Some(wanted) = super::baseline::wanted(self.spec, self.obs, &moment) else {
            return (intent, None);
        };
        let stable_replicas = if self.dynamic_stable_scale() {
            // The baseline's traffic left the stable too: its share comes out of the
            // stable's pods once the router reports it (as the canary's does).
            let on_canary = canary_weight.min(self.obs.router_canary_weight.unwrap_or(0));
            let on_baseline = wanted
                .weight
                .min(self.obs.router_baseline_weight.unwrap_or(0));
            scaling::dynamic_stable_pods(self.replicas, on_canary + on_baseline)
        } else if self.router {
            stable_replicas
        } else {
            let in_place = super::baseline::ready_in_place_of_stable(&wanted, self.obs);
            (stable_replicas - in_place).max(i32::from(stable_replicas > 0))
        };
        let creating = self
            .step_run
            .iter()
            .chain(&self.background_run)
            .any(|run| self.observed_run(&run.name).is_none());
        if !wanted.converged && creating {
            let note = super::baseline::waiting_note(&wanted, self.obs);
            s.message = Some(match s.message.take() {
                Some(message) if !message.is_empty() => format!("{message}; {note}"),
                _ => note,
            });
        }
        let intent = Intent::Canary {
            canary_replicas,
            stable_replicas,
            canary_weight,
        };
        (intent, Some(wanted))
    }

    fn wanted_conditions(&self, s: &RolloutStatus, ready: i32) -> Vec<WantedCondition> {
        let message = s.message.clone().unwrap_or_default();
        let invalid = !self.problems.is_empty();
        let (status, reason) = match s.phase {
            Some(RolloutPhase::Healthy) => ("True", "RolloutCompleted".to_owned()),
            Some(RolloutPhase::Paused) => ("Unknown", "RolloutPaused".to_owned()),
            Some(RolloutPhase::Degraded | RolloutPhase::Aborted) => {
                let reason = if invalid {
                    "InvalidSpec".to_owned()
                } else if let Some(reason) = self.abort_reason {
                    reason.to_owned()
                } else {
                    self.previous
                        .conditions
                        .iter()
                        .find(|c| c.type_ == PROGRESSING && c.status == "False")
                        .map_or_else(|| "RolloutAborted".to_owned(), |c| c.reason.clone())
                };
                ("False", reason)
            }
            Some(RolloutPhase::Progressing) | None => ("True", "RolloutProgressing".to_owned()),
        };
        let available = ready >= self.replicas;
        let paused = s.pause_conditions.first();
        vec![
            WantedCondition {
                type_: PROGRESSING,
                status,
                reason,
                message: message.clone(),
            },
            WantedCondition {
                type_: AVAILABLE,
                status: if available { "True" } else { "False" },
                reason: if available {
                    "MinimumReplicasAvailable"
                } else {
                    "MinimumReplicasUnavailable"
                }
                .into(),
                message: format!("{ready}/{} pods ready", self.replicas),
            },
            WantedCondition {
                type_: PAUSED,
                status: if paused.is_some() { "True" } else { "False" },
                reason: paused
                    .map_or("NotPaused", |p| pause_reason_name(p.reason))
                    .into(),
                message: if paused.is_some() {
                    message
                } else {
                    String::new()
                },
            },
            WantedCondition {
                type_: INVALID_SPEC,
                status: if invalid { "True" } else { "False" },
                reason: if invalid { "InvalidSpec" } else { "SpecValid" }.into(),
                message: self
                    .problems
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            },
        ]
    }

    fn event(&mut self, type_: EventType, reason: &str, message: String) {
        self.events.push(Effect::Event {
            type_,
            reason: reason.to_owned(),
            message,
        });
    }

    /// Whether the revisions other than the stable and the canary may lose their pods now:
    /// traffic verifiably left them and the delay since has passed. The delay starts when
    /// traffic left (recorded as `scaleDownAt`, so a restart keeps it).
    fn scale_down_due(&mut self, recorded_at: Option<Time>, plan: &Plan) -> (Option<Time>, bool) {
        let canary = &self.spec.strategy.canary;
        let applies_late = RouterKind::of(canary.traffic_routing.as_ref()).applies_changes_late();
        let delay = match self.blue_green {
            Some(bg) => bg
                .scale_down_delay_seconds
                .unwrap_or(blue_green::DEFAULT_BLUE_GREEN_DELAY_SECONDS),
            None => canary.scale_down_delay_seconds.unwrap_or(if applies_late {
                DEFAULT_SCALE_DOWN_DELAY_SECONDS
            } else {
                0
            }),
        }
        .max(0);
        if !traffic_left(plan, self.obs) {
            return (None, false);
        }
        if delay == 0 || leftover_revisions(plan, self.obs).is_empty() {
            return (None, true);
        }
        let at =
            recorded_at.unwrap_or_else(|| Time(add_seconds(self.recorded.0, i64::from(delay))));
        let due = self.now >= at.0;
        if !due {
            self.requeue(at.0);
        }
        (Some(at), due)
    }

    fn requeue(&mut self, at: Timestamp) {
        self.requeue_at = Some(self.requeue_at.map_or(at, |earlier| earlier.min(at)));
    }

    fn step_count(&self) -> i32 {
        to_i32(self.steps.len())
    }

    fn index(&self, s: &RolloutStatus) -> usize {
        usize::try_from(s.current_step_index.unwrap_or(0).max(0))
            .unwrap_or(0)
            .min(self.steps.len())
    }

    /// The step in progress counted from 1, as events count completed steps: `2/5` is the
    /// second of five (`steps[1]`, whose AnalysisRun ends in `-step1`); `5/5` once all are
    /// done.
    fn step_display(&self, s: &RolloutStatus) -> String {
        if self.blue_green.is_some() {
            return blue_green::stage_name(blue_green::stage(s)).to_owned();
        }
        step_display(self.index(s), self.steps.len())
    }

    fn step_started(&self, s: &RolloutStatus) -> Timestamp {
        s.current_step_started_at.as_ref().map_or(self.now, |t| t.0)
    }

    /// The weight of the last setWeight step at or before `index`; 100 once all are done.
    fn weight_at(&self, index: usize) -> i32 {
        if index >= self.steps.len() {
            return 100;
        }
        self.steps[..=index]
            .iter()
            .rev()
            .find_map(|step| step.set_weight)
            .unwrap_or(0)
            .clamp(0, 100)
    }

    fn ready(&self, revision: &str) -> i32 {
        self.obs
            .revisions
            .iter()
            .find(|r| r.revision == revision)
            .map_or(0, |r| r.ready_replicas)
    }
}

/// `<step in progress, from 1>/<steps>`, at most `<steps>/<steps>` (all done).
fn step_display(index: usize, count: usize) -> String {
    format!("{}/{count}", index.saturating_add(1).min(count))
}

fn to_i32(value: usize) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

fn add_seconds(at: Timestamp, seconds: i64) -> Timestamp {
    at.checked_add(SignedDuration::from_secs(seconds))
        .unwrap_or(Timestamp::MAX)
}

fn add_duration(at: Timestamp, duration: std::time::Duration) -> Timestamp {
    SignedDuration::try_from(duration)
        .ok()
        .and_then(|d| at.checked_add(d).ok())
        .unwrap_or(Timestamp::MAX)
}

fn describe_step(step: &CanaryStep) -> String {
    if let Some(weight) = step.set_weight {
        format!("setWeight {weight}")
    } else if let Some(pause) = &step.pause {
        match &pause.duration {
            Some(duration) => format!("pause {duration}"),
            None => "pause".into(),
        }
    } else if let Some(analysis) = &step.analysis {
        let names: Vec<&str> = analysis
            .templates
            .iter()
            .map(|t| t.template_name.as_str())
            .collect();
        format!("analysis {}", names.join(", "))
    } else if let Some(set) = &step.set_header_route {
        let verb = if set.match_.is_empty() {
            "remove"
        } else {
            "set"
        };
        format!("setHeaderRoute {} ({verb})", set.name)
    } else if let Some(set) = &step.set_mirror_route {
        let verb = if set.match_.is_empty() {
            "remove"
        } else {
            "set"
        };
        format!("setMirrorRoute {} ({verb})", set.name)
    } else if let Some(scale) = &step.set_canary_scale {
        match (scale.replicas, scale.weight) {
            (Some(replicas), _) => format!("setCanaryScale {replicas} replicas"),
            (None, Some(weight)) => format!("setCanaryScale {weight}%"),
            (None, None) => "setCanaryScale matchTrafficWeight".into(),
        }
    } else {
        "empty step".into()
    }
}

/// The managed routes by name, e.g. `header testers, mirror shadow 35%`, or `none`.
fn describe_routes(routes: &ManagedRoutes) -> String {
    let names: Vec<String> = routes
        .header
        .iter()
        .map(|r| format!("header {}", r.name))
        .chain(
            routes
                .mirror
                .iter()
                .map(|r| format!("mirror {} {}%", r.name, r.percentage)),
        )
        .collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

/// The failing metrics and their reasons, else the run's own message.
fn describe_failure(run: &AnalysisRunSummary) -> String {
    describe_metrics(run, AnalysisPhase::Failed, "failed")
}

/// Why "no data" usually happens, for a verdict that says it: the canary has served no
/// requests yet (a first try without load), or fewer than the template asks for.
fn no_data_hint(reason: &str) -> &'static str {
    if reason.contains("no data") {
        " (no data usually means the canary served no requests yet: send it traffic, e.g. \
         `vigil run --load RPS` locally, or lower the template's min-requests)"
    } else {
        ""
    }
}

fn describe_undecided(run: &AnalysisRunSummary) -> String {
    let (phase, word) = match run.phase {
        AnalysisPhase::Error => (AnalysisPhase::Error, "errored"),
        AnalysisPhase::Terminated => (AnalysisPhase::Terminated, "was terminated"),
        _ => (AnalysisPhase::Inconclusive, "inconclusive"),
    };
    describe_metrics(run, phase, word)
}

fn describe_metrics(run: &AnalysisRunSummary, phase: AnalysisPhase, word: &str) -> String {
    let metrics: Vec<String> = run
        .metrics
        .iter()
        .filter(|m| m.phase == phase)
        .map(|m| {
            let reason = m.reason.as_deref().unwrap_or("no reason given");
            // Most reasons already quote the value; say it once.
            let value = m
                .value
                .as_ref()
                .filter(|v| !reason.contains(v.as_str()))
                .map(|v| format!(" (value {v})"))
                .unwrap_or_default();
            format!("metric {:?} {word}: {reason}{value}", m.name)
        })
        .collect();
    let detail = if metrics.is_empty() {
        match &run.message {
            Some(message) => format!("{word}: {message}"),
            None => format!("{word}, no reason given"),
        }
    } else {
        metrics.join("; ")
    };
    format!("{detail} (AnalysisRun {})", run.name)
}

/// The selector in `kubectl` syntax, for the scale subresource.
fn selector_string(selector: &LabelSelector) -> Option<String> {
    let mut parts: Vec<String> = selector
        .match_labels
        .iter()
        .flatten()
        .map(|(key, value)| format!("{key}={value}"))
        .collect();
    for expression in selector.match_expressions.iter().flatten() {
        let values = expression.values.clone().unwrap_or_default().join(",");
        let key = &expression.key;
        parts.push(match expression.operator.as_str() {
            "In" => format!("{key} in ({values})"),
            "NotIn" => format!("{key} notin ({values})"),
            "Exists" => key.clone(),
            "DoesNotExist" => format!("!{key}"),
            other => format!("{key} {other} ({values})"),
        });
    }
    (!parts.is_empty()).then(|| parts.join(","))
}

//! The blue-green strategy (`spec.strategy.blueGreen`): the same machine as the canary, with
//! three stages in place of steps, recorded in `status.currentStepIndex` so a restarted
//! controller resumes where it was:
//!
//! * **0 `preview`**: the new revision runs `previewReplicaCount` pods (default `replicas`)
//!   behind the preview Service; the active Service keeps the stable revision. Once they are
//!   ready, `prePromotionAnalysis` runs; then the release pauses (`BlueGreenPause`) for
//!   `vigil promote` (`autoPromotionEnabled: false`) or `autoPromotionSeconds`, or moves on.
//! * **1 `promoting`**: the new revision is scaled to `replicas`; once all are ready, the
//!   switch.
//! * **2 `switched`**: the active Service selects the new revision (`canaryWeight` 100); the
//!   previous one keeps `replicas` pods while `postPromotionAnalysis` runs. Successful (or no
//!   analysis): the new revision is stable, the previous one is scaled down
//!   `scaleDownDelaySeconds` later. Failed: the abort points the active Service back at once.
//!
//! Aborts, retries, `spec.paused`, invalid specs and the progress deadline are the canary's
//! rules (see the module docs of [`crate::rollout`]).

use jiff::Timestamp;

use crate::api::{
    AnalysisPhase, AnalysisRunSummary, AnalysisStep, BlueGreenStrategy, PauseReason, RolloutPhase,
    RolloutStatus,
};

use super::super::{AnalysisKind, EventType, post_promotion_run_name, pre_promotion_run_name};
use super::{
    DEFAULT_PROGRESS_DEADLINE_SECONDS, Intent, Machine, WantedRun, add_seconds, describe_failure,
    describe_undecided,
};

/// Default of `blueGreen.scaleDownDelaySeconds` and `abortScaleDownDelaySeconds` (Argo's).
pub(super) const DEFAULT_BLUE_GREEN_DELAY_SECONDS: i32 = 30;

/// The stages, as recorded in `currentStepIndex`.
const PREVIEW: i32 = 0;
const PROMOTING: i32 = 1;
const SWITCHED: i32 = 2;

/// The stage's name, shown as `status.step`.
pub(super) fn stage_name(stage: i32) -> &'static str {
    match stage {
        PREVIEW => "preview",
        PROMOTING => "promoting",
        _ => "switched",
    }
}

/// The stage recorded in status (a status edited by hand is clamped to a stage).
pub(super) fn stage(s: &RolloutStatus) -> i32 {
    s.current_step_index
        .unwrap_or(PREVIEW)
        .clamp(PREVIEW, SWITCHED)
}

/// What one stage decided.
enum Stage {
    /// Go on to the next stage in this decision.
    Next,
    /// Stay; the cluster takes this shape.
    Stay(Intent),
}

impl Machine<'_> {
    /// A blue-green release in flight, not aborted, not paused by the spec, spec valid.
    pub(super) fn blue_green(&mut self, s: &mut RolloutStatus, bg: &BlueGreenStrategy) -> Intent {
        self.note_blue_green_resume(s);
        for _ in 0..4 {
            let outcome = match stage(s) {
                PREVIEW => self.preview(s, bg),
                PROMOTING => self.promoting(s),
                _ => return self.switched(s, bg),
            };
            match outcome {
                Stage::Next => {
                    let next = stage(s) + 1;
                    self.enter_step(s, usize::try_from(next).unwrap_or(0));
                }
                Stage::Stay(intent) => return intent,
            }
        }
        Intent::Hold
    }

    /// After `resume`: the event, and a fresh deadline clock while scaling for the switch.
    fn note_blue_green_resume(&mut self, s: &mut RolloutStatus) {
        if !self.was_paused_for(PauseReason::UserPaused) {
            return;
        }
        if stage(s) == PROMOTING {
            self.enter_step(s, 1);
        }
        self.event(
            EventType::Normal,
            "RolloutResumed",
            format!("resumed at step {}", self.step_display(s)),
        );
    }

    /// Stage 0: preview pods, pre-promotion analysis, the pause before the switch.
    fn preview(&mut self, s: &mut RolloutStatus, bg: &BlueGreenStrategy) -> Stage {
        let canary = s.canary_revision.clone().unwrap_or_default();
        let pods = bg
            .preview_replica_count
            .unwrap_or(self.replicas)
            .clamp(0, self.replicas);
        let intent = Intent::Canary {
            canary_replicas: pods,
            stable_replicas: self.replicas,
            canary_weight: 0,
        };
        s.canary_weight = 0;
        if s.promote_full {
            self.event(
                EventType::Normal,
                "RolloutPromotedFull",
                format!(
                    "promote --full: revision {canary} goes to the switch without analysis or pause"
                ),
            );
            return Stage::Next;
        }
        let promoted = s.promote_step == Some(PREVIEW);
        if promoted {
            s.promote_step = None;
            self.step_run = None;
            self.event(
                EventType::Normal,
                "BlueGreenPromoted",
                format!("preview of revision {canary} promoted by vigil promote"),
            );
            return Stage::Next;
        }
        let ready = self.ready(&canary);
        if ready < pods {
            let what = format!("waiting for the preview's pods: {ready}/{pods} ready");
            return self.wait_for_pods(s, intent, what);
        }
        if let Some(analysis) = &bg.pre_promotion_analysis {
            let run = self.want_promotion_run(s, AnalysisKind::PrePromotion, analysis);
            if let Some(stay) = self.follow_promotion_run(s, &run, intent) {
                return stay;
            }
        }
        self.before_switch(s, bg, intent, &canary)
    }

    /// The pause before the switch: for `vigil promote` or `autoPromotionSeconds`.
    fn before_switch(
        &mut self,
        s: &mut RolloutStatus,
        bg: &BlueGreenStrategy,
        intent: Intent,
        canary: &str,
    ) -> Stage {
        let seconds = bg.auto_promotion_seconds.unwrap_or(0).max(0);
        let waiting = if !bg.auto_promotion_enabled.unwrap_or(true) {
            "waiting for vigil promote (autoPromotionEnabled: false)".to_owned()
        } else if seconds > 0 {
            let since = self
                .previous
                .pause_conditions
                .iter()
                .find(|p| p.reason == PauseReason::BlueGreenPause)
                .map_or(self.now, |p| p.start_time.0);
            let at = add_seconds(since, i64::from(seconds));
            if self.now >= at {
                return self.auto_promoted(canary, &format!("after {seconds}s"));
            }
            self.requeue(at);
            let at = Timestamp::from_second(at.as_second()).unwrap_or(at);
            format!(
                "promotes automatically at {at} (autoPromotionSeconds {seconds}); vigil promote promotes now"
            )
        } else {
            return self.auto_promoted(canary, "at once");
        };
        s.phase = Some(RolloutPhase::Paused);
        s.message = Some(format!(
            "step {}: revision {canary} is ready behind the preview service; {waiting}",
            self.step_display(s)
        ));
        if !self.was_paused_for(PauseReason::BlueGreenPause) {
            self.event(
                EventType::Normal,
                "BlueGreenPaused",
                format!("preview of revision {canary} ready: {waiting}"),
            );
        }
        self.pauses.push(PauseReason::BlueGreenPause);
        Stage::Stay(intent)
    }

    fn auto_promoted(&mut self, canary: &str, when: &str) -> Stage {
        self.event(
            EventType::Normal,
            "BlueGreenPromoted",
            format!("preview of revision {canary} promoted automatically {when}"),
        );
        Stage::Next
    }

    /// Stage 1: the new revision at full scale, then the switch.
    fn promoting(&mut self, s: &mut RolloutStatus) -> Stage {
        // Switching to pods that are not ready would drop traffic: promote cannot skip this.
        if s.promote_step == Some(PROMOTING) {
            s.promote_step = None;
        }
        let canary = s.canary_revision.clone().unwrap_or_default();
        let intent = Intent::Canary {
            canary_replicas: self.replicas,
            stable_replicas: self.replicas,
            canary_weight: 0,
        };
        let ready = self.ready(&canary);
        if ready < self.replicas {
            let what = format!(
                "scaling revision {canary} for the switch: {ready}/{} pods ready",
                self.replicas
            );
            return self.wait_for_pods(s, intent, what);
        }
        self.event(
            EventType::Normal,
            "ActiveServiceSwitched",
            format!(
                "the active service now selects revision {canary} (was {})",
                s.stable_revision.as_deref().unwrap_or_default()
            ),
        );
        Stage::Next
    }

    /// Stage 2: switched; the post-promotion analysis decides, then the new revision is stable.
    fn switched(&mut self, s: &mut RolloutStatus, bg: &BlueGreenStrategy) -> Intent {
        s.canary_weight = 100;
        let intent = Intent::Switched;
        if let Some(analysis) = bg
            .post_promotion_analysis
            .as_ref()
            .filter(|_| !s.promote_full)
        {
            let accepted = s.promote_step == Some(SWITCHED);
            let run = self.want_promotion_run(s, AnalysisKind::PostPromotion, analysis);
            if !accepted && let Some(Stage::Stay(stay)) = self.follow_promotion_run(s, &run, intent)
            {
                return stay;
            }
            if accepted {
                self.step_run = None;
                self.event(
                    EventType::Normal,
                    "AnalysisAccepted",
                    format!("post-promotion analysis {} ended by promote", run.name),
                );
            }
        }
        self.complete(s)
    }

    /// The new revision becomes the stable one; the previous goes after the delay.
    fn complete(&mut self, s: &mut RolloutStatus) -> Intent {
        let old = s.stable_revision.clone().unwrap_or_default();
        let new = s.canary_revision.clone().unwrap_or_default();
        s.stable_revision = Some(new.clone());
        self.clear_canary(s);
        self.step_run = None;
        self.rollout_finished = true;
        self.event(
            EventType::Normal,
            "RolloutCompleted",
            format!("revision {new} promoted to stable (was {old}): blue-green switch complete"),
        );
        self.idle(s, false)
    }

    /// Waits for pods, or aborts once the progress deadline has passed since the stage began.
    fn wait_for_pods(&mut self, s: &mut RolloutStatus, intent: Intent, what: String) -> Stage {
        let seconds = self
            .spec
            .progress_deadline_seconds
            .map_or(DEFAULT_PROGRESS_DEADLINE_SECONDS, i64::from)
            .max(1);
        let deadline = add_seconds(self.step_started(s), seconds);
        if self.now >= deadline {
            let message = format!(
                "ProgressDeadlineExceeded: step {} did not converge within {seconds}s: {what}; stable revision {} serves all traffic",
                self.step_display(s),
                s.stable_revision.as_deref().unwrap_or_default()
            );
            self.abort(
                s,
                RolloutPhase::Degraded,
                "ProgressDeadlineExceeded",
                message,
            );
            return Stage::Stay(self.aborted(s, false));
        }
        self.requeue(deadline);
        s.phase = Some(RolloutPhase::Progressing);
        s.message = Some(format!("step {}: {what}", self.step_display(s)));
        Stage::Stay(intent)
    }

    /// Records the pre- or post-promotion run in `status.stepAnalysis` and wants it to exist.
    fn want_promotion_run(
        &mut self,
        s: &mut RolloutStatus,
        kind: AnalysisKind,
        analysis: &AnalysisStep,
    ) -> AnalysisRunSummary {
        let name = self.promotion_run_name(s, kind);
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
            kind,
            templates: analysis.templates.clone(),
            args: analysis.args.clone(),
        });
        s.step_analysis.clone().unwrap_or_default()
    }

    fn promotion_run_name(&self, s: &RolloutStatus, kind: AnalysisKind) -> String {
        let canary = s.canary_revision.as_deref().unwrap_or_default();
        let name = if kind == AnalysisKind::PostPromotion {
            post_promotion_run_name
        } else {
            pre_promotion_run_name
        };
        name(&self.obs.rollout_name, canary, s.canary_attempt)
    }

    /// Follows a promotion run's phase: `None` once Successful; otherwise what to do.
    fn follow_promotion_run(
        &mut self,
        s: &mut RolloutStatus,
        run: &AnalysisRunSummary,
        intent: Intent,
    ) -> Option<Stage> {
        let which = stage_analysis(stage(s));
        match run.phase {
            AnalysisPhase::Successful => None,
            AnalysisPhase::Failed => {
                let message = self.promotion_failure(s, run);
                self.abort(s, RolloutPhase::Degraded, "AnalysisFailed", message);
                Some(Stage::Stay(self.aborted(s, false)))
            }
            AnalysisPhase::Inconclusive | AnalysisPhase::Error | AnalysisPhase::Terminated => {
                let message = format!(
                    "paused at step {}: {which} {}; promote to continue, abort to roll back",
                    self.step_display(s),
                    describe_undecided(run)
                );
                s.phase = Some(RolloutPhase::Paused);
                s.message = Some(message.clone());
                self.pauses.push(PauseReason::InconclusiveAnalysis);
                if !self.was_paused_for(PauseReason::InconclusiveAnalysis) {
                    self.event(EventType::Warning, "AnalysisInconclusive", message);
                }
                Some(Stage::Stay(intent))
            }
            AnalysisPhase::Pending | AnalysisPhase::Running => {
                s.phase = Some(RolloutPhase::Progressing);
                s.message = Some(format!(
                    "step {}: waiting for {which} AnalysisRun {} ({:?})",
                    self.step_display(s),
                    run.name,
                    run.phase
                ));
                Some(Stage::Stay(intent))
            }
        }
    }

    /// The abort message of a Failed pre- or post-promotion run.
    fn promotion_failure(&self, s: &RolloutStatus, run: &AnalysisRunSummary) -> String {
        let stable = s.stable_revision.as_deref().unwrap_or_default();
        let after = if stage(s) == SWITCHED {
            format!("the active service is switched back to revision {stable}")
        } else {
            format!("active revision {stable} keeps serving")
        };
        format!(
            "{} failed at step {}: {}; {after}",
            stage_analysis(stage(s)),
            self.step_display(s),
            describe_failure(run)
        )
    }

    /// A Failed run of the current stage, found before anything else (even while paused).
    pub(super) fn failed_promotion_run(&self, s: &RolloutStatus) -> Option<String> {
        let kind = match stage(s) {
            PREVIEW => AnalysisKind::PrePromotion,
            SWITCHED => AnalysisKind::PostPromotion,
            _ => return None,
        };
        let name = self.promotion_run_name(s, kind);
        s.step_analysis
            .as_ref()
            .filter(|run| run.phase == AnalysisPhase::Failed && run.name == name)
            .map(|run| self.promotion_failure(s, run))
    }

    /// Seconds an aborted blue-green release keeps the new revision's pods.
    pub(super) fn blue_green_abort_delay(bg: &BlueGreenStrategy) -> i64 {
        i64::from(
            bg.abort_scale_down_delay_seconds
                .unwrap_or(DEFAULT_BLUE_GREEN_DELAY_SECONDS),
        )
    }
}

/// Which analysis a stage runs, in words.
fn stage_analysis(stage: i32) -> &'static str {
    if stage == SWITCHED {
        "post-promotion analysis"
    } else {
        "pre-promotion analysis"
    }
}

//! The webhook rules of the state machine: gates (pre-rollout, confirm-rollout,
//! confirm-traffic-increase, confirm-promotion) hold the rollout until their hooks answered
//! 2xx, a rollback hook that answers 2xx aborts the canary, and post-rollout / event hooks are
//! notified. Answers come in through [`Observation::webhook_answers`]; what passed is kept in
//! `status.webhooks` so a restarted controller neither skips a gate nor asks it again.

use std::collections::BTreeMap;

use crate::api::duration::parse_duration;
use crate::api::webhook::{DEFAULT_WEBHOOK_TIMEOUT, MAX_WEBHOOK_TIMEOUT};
use crate::api::{AnalysisPhase, RolloutPhase, RolloutStatus, Webhook, WebhookStatus, WebhookType};

use super::super::webhooks::{
    CallKind, PayloadAnalysis, PayloadEvent, PayloadRevisions, PayloadWeights,
    WEBHOOK_POLL_INTERVAL, WebhookCall, WebhookOutcome, WebhookPayload, poll_key,
};
use super::super::{Effect, EventType, Observation};
use super::{Intent, Machine, add_duration};

/// A call the machine decided on; its payload is built from the final status.
pub(super) struct WantedCall<'a> {
    hook: &'a Webhook,
    key: String,
    kind: CallKind,
}

impl<'a> Machine<'a> {
    fn hooks_of(&self, type_: WebhookType) -> impl Iterator<Item = &'a Webhook> + use<'a> {
        let hooks: &'a [Webhook] = &self.spec.strategy.canary.webhooks;
        hooks.iter().filter(move |hook| hook.type_ == type_)
    }

    fn answer(&self, key: &str) -> Option<&'a WebhookOutcome> {
        let obs: &'a Observation = self.obs;
        obs.webhook_answers
            .iter()
            .find(|answer| answer.key == key)
            .map(|answer| &answer.outcome)
    }

    /// `<canary>/<attempt>`: the attempt `status.webhooks` belongs to.
    fn attempt_id(s: &RolloutStatus) -> String {
        format!(
            "{}/{}",
            s.canary_revision.as_deref().unwrap_or_default(),
            s.canary_attempt
        )
    }

    fn gate_passed(s: &RolloutStatus, gate: &str) -> bool {
        s.webhooks
            .as_ref()
            .is_some_and(|w| w.attempt == Self::attempt_id(s) && w.passed.iter().any(|p| p == gate))
    }

    fn record_gate(s: &mut RolloutStatus, gate: String) {
        let attempt = Self::attempt_id(s);
        let status = s.webhooks.get_or_insert_with(WebhookStatus::default);
        if status.attempt != attempt {
            *status = WebhookStatus {
                attempt,
                passed: Vec::new(),
            };
        }
        status.passed.push(gate);
    }

    /// The hooks of `type_` not passed yet for this attempt (at step `index` for
    /// confirm-traffic-increase) are asked; `Some(why)` while any of them has not answered
    /// 2xx, naming the first.
    pub(super) fn pending_gate(
        &mut self,
        s: &mut RolloutStatus,
        type_: WebhookType,
        index: Option<usize>,
    ) -> Option<String> {
        let canary = s.canary_revision.clone().unwrap_or_default();
        let mut waiting = None;
        for hook in self.hooks_of(type_) {
            let gate = match index {
                Some(index) => format!("{}@{index}", hook.name),
                None => hook.name.clone(),
            };
            if Self::gate_passed(s, &gate) {
                continue;
            }
            let key = poll_key(type_, &hook.name, &canary, s.canary_attempt, index);
            match self.answer(&key) {
                Some(outcome) if outcome.passed() => {
                    Self::record_gate(s, gate);
                    self.event(
                        EventType::Normal,
                        "WebhookGatePassed",
                        format!("{type_} hook {} {outcome}", hook.name),
                    );
                }
                answer => {
                    let last = answer.map_or_else(|| "no answer yet".to_owned(), |a| a.to_string());
                    waiting
                        .get_or_insert(format!("waiting for {type_} hook {}: {last}", hook.name));
                    self.poll(hook, key);
                }
            }
        }
        waiting
    }

    fn poll(&mut self, hook: &'a Webhook, key: String) {
        self.calls.push(WantedCall {
            hook,
            key,
            kind: CallKind::Poll,
        });
        self.requeue(add_duration(self.now, WEBHOOK_POLL_INTERVAL));
    }

    /// Before any traffic moves to this attempt's canary: pre-rollout hooks, then
    /// confirm-rollout ones. `Some(intent)` holds the canary at zero pods and zero weight.
    pub(super) fn rollout_gates(&mut self, s: &mut RolloutStatus) -> Option<Intent> {
        if self.index(s) != 0 || s.canary_weight != 0 {
            return None;
        }
        let before = s.webhooks.clone();
        let Some(waiting) = self
            .pending_gate(s, WebhookType::PreRollout, None)
            .or_else(|| self.pending_gate(s, WebhookType::ConfirmRollout, None))
        else {
            self.restart_clock_if_passed(s, before.as_ref());
            return None;
        };
        self.hold_at_gate(s, waiting);
        Some(Intent::Canary {
            canary_replicas: 0,
            stable_replicas: self.replicas,
            canary_weight: 0,
        })
    }

    /// Before the weight rises from `from` to `to` at step `index`.
    pub(super) fn traffic_gate(
        &mut self,
        s: &mut RolloutStatus,
        index: usize,
        from: i32,
        to: i32,
    ) -> Option<Intent> {
        if to <= from {
            return None;
        }
        let before = s.webhooks.clone();
        let Some(waiting) = self.pending_gate(s, WebhookType::ConfirmTrafficIncrease, Some(index))
        else {
            self.restart_clock_if_passed(s, before.as_ref());
            return None;
        };
        let (intent, _) = self.converge(s, from);
        self.hold_at_gate(s, format!("{waiting} (before raising the weight to {to})"));
        Some(intent)
    }

    /// Before the canary is promoted, after the last step.
    pub(super) fn promotion_gate(&mut self, s: &mut RolloutStatus) -> Option<Intent> {
        let before = s.webhooks.clone();
        let Some(waiting) = self.pending_gate(s, WebhookType::ConfirmPromotion, None) else {
            self.restart_clock_if_passed(s, before.as_ref());
            return None;
        };
        let last_weight = match self.steps.len() {
            0 => 0,
            count => self.weight_at(count - 1),
        };
        let (intent, _) = self.converge(s, last_weight);
        self.hold_at_gate(s, format!("{waiting} (before promotion)"));
        Some(intent)
    }

    /// A gate that opened in this decision starts the step's clock again: the time spent
    /// waiting for a person is no progress deadline's business (nor a timed pause's).
    fn restart_clock_if_passed(&self, s: &mut RolloutStatus, before: Option<&WebhookStatus>) {
        if s.webhooks.as_ref() != before {
            let index = self.index(s);
            self.enter_step(s, index);
        }
    }

    fn hold_at_gate(&mut self, s: &mut RolloutStatus, waiting: String) {
        s.phase = Some(RolloutPhase::Progressing);
        s.message = Some(format!("step {}: {waiting}", self.step_display(s)));
    }

    /// The rollback hooks of a canary in flight: polled; `Some(why)` once one answered 2xx.
    pub(super) fn rollback_requested(&mut self, s: &RolloutStatus) -> Option<String> {
        let canary = s.canary_revision.clone().unwrap_or_default();
        for hook in self.hooks_of(WebhookType::Rollback) {
            let key = poll_key(
                WebhookType::Rollback,
                &hook.name,
                &canary,
                s.canary_attempt,
                None,
            );
            if let Some(outcome) = self.answer(&key).filter(|o| o.passed()) {
                return Some(format!(
                    "rolled back by rollback hook {} ({outcome}) at step {}; stable revision {} serves all traffic",
                    hook.name,
                    self.step_display(s),
                    s.stable_revision.as_deref().unwrap_or_default()
                ));
            }
            self.poll(hook, key);
        }
        None
    }

    /// The calls to hand to the shell: the polls decided on, a post-rollout notification
    /// when the canary was promoted or rolled back, and one `event` call per event. Hooks
    /// whose own fields are invalid are never called.
    pub(super) fn webhook_calls(&self, s: &RolloutStatus) -> Vec<WebhookCall> {
        let valid = |hook: &Webhook| self.hook_valid(hook);
        let mut calls: Vec<WebhookCall> = self
            .calls
            .iter()
            .filter(|call| valid(call.hook))
            .map(|call| self.call(s, call.hook, call.key.clone(), call.kind, None))
            .collect();
        if self.rollout_finished {
            for hook in self.hooks_of(WebhookType::PostRollout).filter(|h| valid(h)) {
                // One per canary attempt and outcome: a repeated reconcile notifies once.
                let key = format!(
                    "post-rollout/{}/{}/{:?}",
                    hook.name, s.canary_attempt, s.phase
                );
                calls.push(self.call(s, hook, key, CallKind::Notify, None));
            }
        }
        for event in &self.events {
            let Effect::Event {
                type_,
                reason,
                message,
            } = event
            else {
                continue;
            };
            let event = PayloadEvent {
                type_: match type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .to_owned(),
                reason: reason.clone(),
                message: message.clone(),
            };
            for hook in self.hooks_of(WebhookType::Event).filter(|h| valid(h)) {
                let key = format!(
                    "event/{}/{}/{}/{}/{:016x}",
                    hook.name,
                    s.canary_attempt,
                    s.step.as_deref().unwrap_or_default(),
                    event.reason,
                    fnv1a(&event.message)
                );
                calls.push(self.call(s, hook, key, CallKind::Notify, Some(event.clone())));
            }
        }
        calls
    }

    /// Whether the hook's own fields are valid (the validator names no problem under it),
    /// and the list of hooks is within its bound.
    fn hook_valid(&self, hook: &Webhook) -> bool {
        let hooks = &self.spec.strategy.canary.webhooks;
        if hooks.len() > crate::api::webhook::MAX_WEBHOOKS {
            return false;
        }
        let Some(index) = hooks.iter().position(|h| std::ptr::eq(h, hook)) else {
            return false;
        };
        let prefix = format!("spec.strategy.canary.webhooks[{index}]");
        !self.problems.iter().any(|p| p.path.starts_with(&prefix))
    }

    fn call(
        &self,
        s: &RolloutStatus,
        hook: &Webhook,
        key: String,
        kind: CallKind,
        event: Option<PayloadEvent>,
    ) -> WebhookCall {
        let timeout = hook
            .timeout
            .as_deref()
            .and_then(|t| parse_duration(t).ok())
            .unwrap_or(DEFAULT_WEBHOOK_TIMEOUT)
            .min(MAX_WEBHOOK_TIMEOUT);
        let mut metadata: BTreeMap<String, String> = hook.metadata.clone();
        if let Some(event) = &event {
            metadata.insert("eventType".into(), event.type_.clone());
            metadata.insert("eventMessage".into(), event.message.clone());
        }
        WebhookCall {
            key,
            kind,
            name: hook.name.clone(),
            url: hook.url.clone(),
            timeout,
            payload: WebhookPayload {
                name: self.obs.rollout_name.clone(),
                namespace: None,
                phase: s
                    .phase
                    .map_or_else(|| "Progressing".to_owned(), |p| format!("{p:?}")),
                metadata,
                type_: hook.type_.as_str().to_owned(),
                webhook: hook.name.clone(),
                step: s.step.clone(),
                revisions: PayloadRevisions {
                    stable: s.stable_revision.clone(),
                    canary: s.canary_revision.clone(),
                },
                weights: PayloadWeights {
                    stable: 100 - s.canary_weight.clamp(0, 100),
                    canary: s.canary_weight.clamp(0, 100),
                },
                analysis: payload_analysis(s),
                message: s.message.clone(),
                event,
            },
        }
    }
}

/// FNV-1a of `text`: a short, stable stand-in for an event's message in a dedupe key.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The failed analysis when there is one, else the step's, else the background one.
fn payload_analysis(s: &RolloutStatus) -> Option<PayloadAnalysis> {
    let runs = [&s.step_analysis, &s.background_analysis];
    let run = runs
        .iter()
        .copied()
        .flatten()
        .find(|run| run.phase == AnalysisPhase::Failed)
        .or_else(|| runs.iter().copied().flatten().next())?;
    let failing = run
        .metrics
        .iter()
        .find(|m| m.phase == AnalysisPhase::Failed);
    Some(PayloadAnalysis {
        run: run.name.clone(),
        phase: format!("{:?}", run.phase),
        failing_metric: failing.map(|m| m.name.clone()),
        reason: failing
            .and_then(|m| m.reason.clone())
            .or_else(|| run.message.clone()),
    })
}

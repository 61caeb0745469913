//! The one way through a reconcile of one Rollout, for every platform: **observe** (with the
//! dereference step: templates and arguments the spec names, looked up by the platform) →
//! [`rollout::step`] (which runs the one validator, [`rollout::validate_spec`]) → **execute**
//! the effects in order → **record** the status. The Kubernetes controller and the local
//! engine implement [`Platform`]; [`reconcile_once`] is the loop both run.
//!
//! # When an effect fails
//!
//! Execution stops at the first effect that fails, and the decision's status is **not**
//! recorded: status is the only memory, so the status observed gives the same effects again
//! next time, and every effect is idempotent. The error goes back to the platform's loop,
//! which tries again later: the Kubernetes controller with a per-object exponential backoff
//! (`error_policy`), the local engine at its next tick (500 ms), logging the error. An effect
//! that only informs (an Event) never fails the reconcile: a platform logs a failure to write
//! one and goes on, since failing would repeat every effect for the sake of a message.
//!
//! # Notifications
//!
//! Once the decision's status is stored ([`Platform::stored`]), and only then, its
//! transitions ([`notify::transitions`]: started, step completed, paused, promoted, rolled
//! back, progress deadline) go to [`Platform::notify`], which only queues them: a conflicted
//! write or a failed effect notifies nothing (the next reconcile decides the same transition
//! again), and no receiver ever holds a reconcile.

use std::future::Future;

use jiff::Timestamp;

use crate::api::{RolloutSpec, RolloutStatus};
use crate::notify::{self, Transition};
use crate::rollout::webhooks::{CallKind, WebhookCall};
use crate::rollout::{self, Decision, Effect, Observation};

/// What a platform saw of one Rollout: the inputs of [`rollout::step`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observed {
    /// The spec, as the platform reads it.
    pub spec: RolloutSpec,
    /// The status recorded last time.
    pub status: RolloutStatus,
    /// The cluster around it, with the problems the dereference step found.
    pub observation: Observation,
}

/// The three things a platform does for [`reconcile_once`].
pub trait Platform {
    /// Why observing, executing or recording failed.
    type Error;
    /// What recording tells the platform's loop (e.g. "the write conflicted, look again").
    type Recorded;

    /// Reads the Rollout and what is around it, and dereferences what its spec names.
    fn observe(&mut self) -> impl Future<Output = Result<Observed, Self::Error>>;

    /// Executes one effect; `Ok(true)` when it changed something outside (an Event does not).
    fn execute(&mut self, effect: &Effect) -> impl Future<Output = Result<bool, Self::Error>>;

    /// Hands webhook calls of a decision to the platform's [`WebhookCaller`](super::webhooks::WebhookCaller);
    /// never waits for an answer (answers come back in the next observation).
    fn call_webhooks(&mut self, calls: &[WebhookCall]);

    /// Records `decision.status` (the platform may skip a write when nothing changed from
    /// `observed`, the status read).
    fn record(
        &mut self,
        observed: &RolloutStatus,
        decision: &Decision,
    ) -> impl Future<Output = Result<Self::Recorded, Self::Error>>;

    /// Whether `recorded` says the decision's status is stored (or needed no write): only
    /// then did its transitions happen. A conflicted write is decided again later.
    fn stored(recorded: &Self::Recorded) -> bool;

    /// Hands the transitions of a stored decision to the platform's notifier. Only queues:
    /// never waits on a receiver.
    fn notify(&mut self, transitions: &[Transition]);
}

/// What one reconcile did.
#[derive(Debug)]
pub struct Reconciled<R> {
    /// The decision taken.
    pub decision: Decision,
    /// Whether an effect changed something outside.
    pub acted: bool,
    /// What recording returned.
    pub recorded: R,
}

/// One reconcile: observe → step → hand the webhook polls over → execute the effects in
/// order, stopping at the first failure → record → once stored, hand the notifications
/// (webhooks and configured sinks) over. See the module docs for what a failure means.
pub async fn reconcile_once<P: Platform>(
    platform: &mut P,
    now: Timestamp,
) -> Result<Reconciled<P::Recorded>, P::Error> {
    let observed = platform.observe().await?;
    let decision = rollout::step(&observed.spec, &observed.status, &observed.observation, now);
    // Gates and rollback switches are asked whatever the effects do. Notifications (the
    // `event` and `post-rollout` webhooks, like the configured notifications) tell of a
    // transition, so they go only once its status is stored: a conflicted write or a failed
    // effect tells nothing (the next reconcile decides again, and tells what it stores).
    let (polls, notifications): (Vec<WebhookCall>, Vec<WebhookCall>) = decision
        .webhook_calls
        .iter()
        .cloned()
        .partition(|call| call.kind == CallKind::Poll);
    // Also with none: the caller forgets the polls no longer asked for.
    platform.call_webhooks(&polls);
    let mut acted = false;
    for effect in &decision.effects {
        acted |= platform.execute(effect).await?;
    }
    let recorded = platform.record(&observed.status, &decision).await?;
    if P::stored(&recorded) {
        if !notifications.is_empty() {
            platform.call_webhooks(&notifications);
        }
        let transitions = notify::transitions(&observed.status, &decision);
        if !transitions.is_empty() {
            platform.notify(&transitions);
        }
    }
    Ok(Reconciled {
        decision,
        acted,
        recorded,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A platform that records every call and fails the effect at `fail_at`.
    #[derive(Default)]
    struct Recorder {
        observed: Observed,
        fail_at: Option<usize>,
        /// The status write conflicts.
        conflict: bool,
        executed: Vec<Effect>,
        recorded: Vec<RolloutStatus>,
        called: Vec<WebhookCall>,
        notified: Vec<Transition>,
    }

    impl Platform for Recorder {
        type Error = String;
        /// Whether the status was stored.
        type Recorded = bool;

        async fn observe(&mut self) -> Result<Observed, String> {
            Ok(self.observed.clone())
        }

        async fn execute(&mut self, effect: &Effect) -> Result<bool, String> {
            if self.fail_at == Some(self.executed.len()) {
                return Err(format!("{effect:?} failed"));
            }
            self.executed.push(effect.clone());
            Ok(!matches!(effect, Effect::Event { .. }))
        }

        fn call_webhooks(&mut self, calls: &[WebhookCall]) {
            self.called.extend_from_slice(calls);
        }

        async fn record(&mut self, _: &RolloutStatus, decision: &Decision) -> Result<bool, String> {
            if !self.conflict {
                self.recorded.push(decision.status.clone());
            }
            Ok(!self.conflict)
        }

        fn stored(recorded: &bool) -> bool {
            *recorded
        }

        fn notify(&mut self, transitions: &[Transition]) {
            self.notified.extend_from_slice(transitions);
        }
    }

    fn pod_template(image: &str) -> k8s_openapi::api::core::v1::PodTemplateSpec {
        k8s_openapi::api::core::v1::PodTemplateSpec {
            metadata: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                labels: Some([("app".to_owned(), "web".to_owned())].into()),
                ..Default::default()
            }),
            spec: Some(k8s_openapi::api::core::v1::PodSpec {
                containers: vec![k8s_openapi::api::core::v1::Container {
                    image: Some(image.to_owned()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        }
    }

    fn first_version() -> Observed {
        let mut spec = RolloutSpec::default();
        spec.selector.match_labels = Some([("app".to_owned(), "web".to_owned())].into());
        spec.template = Some(Box::new(pod_template("app:1")));
        let desired_revision = rollout::desired_revision(&spec, None);
        Observed {
            spec,
            status: RolloutStatus::default(),
            observation: Observation {
                rollout_name: "web".into(),
                desired_revision,
                ..Observation::default()
            },
        }
    }

    fn now() -> Timestamp {
        Timestamp::from_second(1_700_000_000).expect("valid")
    }

    fn block_on<F: Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(future)
    }

    #[test]
    fn effects_run_in_order_then_the_status_is_recorded() {
        let mut platform = Recorder {
            observed: first_version(),
            ..Recorder::default()
        };
        let reconciled = block_on(reconcile_once(&mut platform, now())).expect("reconciled");
        assert_eq!(platform.executed, reconciled.decision.effects);
        assert!(matches!(
            platform.executed[0],
            Effect::ScaleRevision { replicas: 1, .. }
        ));
        assert!(reconciled.acted);
        assert_eq!(platform.recorded, vec![reconciled.decision.status]);
        let triggers: Vec<_> = platform.notified.iter().map(|t| t.trigger).collect();
        assert_eq!(triggers, vec![notify::Trigger::OnStarted]);
    }

    #[test]
    fn a_conflicted_status_write_notifies_nothing() {
        let mut platform = Recorder {
            observed: first_version(),
            conflict: true,
            ..Recorder::default()
        };
        let reconciled = block_on(reconcile_once(&mut platform, now())).expect("reconciled");
        assert!(!reconciled.decision.effects.is_empty());
        assert!(platform.notified.is_empty(), "{:?}", platform.notified);
    }

    #[test]
    fn a_failed_effect_stops_the_rest_and_records_nothing() {
        let mut platform = Recorder {
            observed: first_version(),
            fail_at: Some(0),
            ..Recorder::default()
        };
        let error = block_on(reconcile_once(&mut platform, now())).expect_err("fails");
        assert!(error.contains("ScaleRevision"), "{error}");
        assert!(platform.executed.is_empty(), "nothing after the failure");
        assert!(
            platform.recorded.is_empty(),
            "no status for a failed reconcile"
        );
        assert!(platform.notified.is_empty(), "no notification either");
    }

    #[test]
    fn a_dereference_problem_holds_the_rollout_with_events_only() {
        let mut observed = first_version();
        observed.observation.spec_problems = vec![rollout::SpecProblem {
            path: "spec.strategy.canary.steps[0].analysis.templates[0].templateName".into(),
            message: "AnalysisTemplate \"errors\" does not exist".into(),
        }];
        let mut platform = Recorder {
            observed,
            ..Recorder::default()
        };
        let reconciled = block_on(reconcile_once(&mut platform, now())).expect("reconciled");
        assert!(!reconciled.acted, "nothing moves: {:?}", platform.executed);
        let message = reconciled.decision.status.message.unwrap_or_default();
        assert!(message.contains("does not exist"), "{message}");
    }

    /// A platform that does what each effect asks at once, as the local engine does with its
    /// processes and proxy, but in memory: pods are ready as soon as they are asked for, and
    /// every analysis succeeds.
    struct FakeCluster {
        observed: Observed,
        revisions: std::collections::BTreeMap<String, i32>,
        weight: i32,
        services: rollout::ServiceSelection,
        runs: Vec<String>,
        workload: Option<rollout::WorkloadObservation>,
        notified: Vec<notify::Trigger>,
    }

    impl Platform for FakeCluster {
        type Error = String;
        type Recorded = ();

        async fn observe(&mut self) -> Result<Observed, String> {
            let mut observed = self.observed.clone();
            let observation = &mut observed.observation;
            observation.workload = self.workload.clone();
            observation.desired_revision =
                rollout::desired_revision(&observed.spec, self.workload.as_ref());
            observation.revisions = self
                .revisions
                .iter()
                .map(|(revision, replicas)| rollout::RevisionObservation {
                    revision: revision.clone(),
                    replicas: *replicas,
                    ready_replicas: *replicas,
                    created_at: None,
                })
                .collect();
            observation.router_canary_weight = Some(self.weight);
            observation.services = self.services.clone();
            observation.analysis_runs = self
                .runs
                .iter()
                .map(|name| crate::api::AnalysisRunSummary {
                    name: name.clone(),
                    phase: crate::api::AnalysisPhase::Successful,
                    ..Default::default()
                })
                .collect();
            Ok(observed)
        }

        async fn execute(&mut self, effect: &Effect) -> Result<bool, String> {
            match effect {
                Effect::ScaleRevision { revision, replicas } => {
                    self.revisions.insert(revision.clone(), *replicas);
                }
                Effect::SetWeight { canary_weight } => self.weight = *canary_weight,
                Effect::PointServices { stable, canary } => {
                    self.services.stable = stable.clone().or(self.services.stable.take());
                    self.services.canary = canary.clone().or(self.services.canary.take());
                }
                Effect::CreateAnalysisRun { name, .. } => self.runs.push(name.clone()),
                Effect::DeleteAnalysisRun { name } => self.runs.retain(|run| run != name),
                Effect::DeleteRevision { revision } => {
                    self.revisions.remove(revision);
                }
                Effect::ScaleDownWorkload { replicas, .. } => {
                    if let Some(workload) = &mut self.workload {
                        workload.replicas = *replicas;
                    }
                }
                Effect::SetHeaderRoute { .. }
                | Effect::RemoveHeaderRoute { .. }
                | Effect::SetMirrorRoute { .. }
                | Effect::RemoveMirrorRoute { .. }
                | Effect::SetBaselineWeight { .. }
                | Effect::PointBaselineService { .. } => {
                    return Err(format!("this fake has no managed routes: {effect:?}"));
                }
                Effect::SetRevisionSettings { .. } => {
                    return Err(format!("this fake has no revision settings: {effect:?}"));
                }
                Effect::TerminateAnalysisRun { .. } | Effect::Event { .. } => return Ok(false),
            }
            Ok(true)
        }

        fn call_webhooks(&mut self, calls: &[WebhookCall]) {
            assert!(
                calls.is_empty(),
                "this fake declares no webhooks: {calls:?}"
            );
        }

        async fn record(&mut self, _: &RolloutStatus, decision: &Decision) -> Result<(), String> {
            self.observed.status = decision.status.clone();
            Ok(())
        }

        fn stored((): &()) -> bool {
            true
        }

        fn notify(&mut self, transitions: &[Transition]) {
            self.notified.extend(transitions.iter().map(|t| t.trigger));
        }
    }

    #[test]
    fn a_canary_goes_from_start_to_stable_through_the_shared_loop() {
        let mut observed = first_version();
        observed.spec.replicas = Some(2);
        observed.spec.strategy.canary.steps = vec![
            crate::api::CanaryStep {
                set_weight: Some(50),
                ..Default::default()
            },
            crate::api::CanaryStep {
                analysis: Some(crate::api::AnalysisStep {
                    templates: vec![crate::api::TemplateRef {
                        template_name: "errors".into(),
                        cluster_scope: false,
                    }],
                    args: vec![],
                }),
                ..Default::default()
            },
        ];
        observed.spec.strategy.canary.traffic_routing = Some(crate::api::TrafficRouting {
            local: Some(crate::api::LocalRouting {
                listen: "127.0.0.1:8080".into(),
            }),
            ..Default::default()
        });
        let mut cluster = FakeCluster {
            observed,
            revisions: Default::default(),
            weight: 0,
            services: Default::default(),
            runs: vec![],
            workload: None,
            notified: vec![],
        };
        let mut at = now();
        let mut settle = |cluster: &mut FakeCluster| {
            for _ in 0..20 {
                at += jiff::SignedDuration::from_secs(5);
                block_on(reconcile_once(cluster, at)).expect("reconciled");
            }
        };
        settle(&mut cluster);
        let first = rollout::desired_revision(&cluster.observed.spec, None);
        assert_eq!(
            cluster.observed.status.stable_revision.as_deref(),
            Some(first.as_str())
        );

        cluster.observed.spec.template = Some(Box::new(pod_template("app:2")));
        let second = rollout::desired_revision(&cluster.observed.spec, None);
        settle(&mut cluster);
        let status = &cluster.observed.status;
        assert_eq!(status.stable_revision.as_deref(), Some(second.as_str()));
        assert_eq!(status.phase, Some(crate::api::RolloutPhase::Healthy));
        assert_eq!(
            cluster.weight, 0,
            "both services on the new stable, weight back to 0"
        );
        assert_eq!(cluster.runs.len(), 1, "the analysis step ran once");
        assert_eq!(cluster.revisions.get(&second), Some(&2));
        use notify::Trigger::{OnPromoted, OnStarted, OnStepCompleted};
        assert_eq!(
            cluster.notified,
            vec![
                OnStarted,
                OnStarted,
                OnStepCompleted,
                OnStepCompleted,
                OnPromoted
            ],
            "the first version, then the canary: each transition once"
        );
    }

    #[test]
    fn a_deployment_is_adopted_then_released_through_the_shared_loop() {
        let mut observed = first_version();
        observed.spec.replicas = Some(2);
        let inline_revision = observed.observation.desired_revision.clone();
        observed.spec.template = None;
        observed.spec.workload_ref = Some(crate::api::WorkloadRef {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            name: "web".into(),
            scale_down: Some(crate::api::ScaleDown::Progressively),
        });
        observed.spec.strategy.canary.steps = vec![crate::api::CanaryStep {
            set_weight: Some(50),
            ..Default::default()
        }];
        let mut cluster = FakeCluster {
            observed,
            revisions: Default::default(),
            weight: 0,
            services: Default::default(),
            runs: vec![],
            workload: Some(rollout::WorkloadObservation {
                template: pod_template("app:1"),
                replicas: 2,
            }),
            notified: vec![],
        };
        let mut at = now();
        let mut settle = |cluster: &mut FakeCluster| {
            for _ in 0..20 {
                at += jiff::SignedDuration::from_secs(5);
                block_on(reconcile_once(cluster, at)).expect("reconciled");
            }
        };
        settle(&mut cluster);
        assert_eq!(
            cluster.observed.status.stable_revision.as_deref(),
            Some(inline_revision.as_str()),
            "the Deployment's template names the revision the same template inline would"
        );
        assert_eq!(cluster.workload.as_ref().map(|w| w.replicas), Some(0));

        if let Some(workload) = &mut cluster.workload {
            workload.template = pod_template("app:2");
        }
        settle(&mut cluster);
        let status = &cluster.observed.status;
        assert_ne!(
            status.stable_revision.as_deref(),
            Some(inline_revision.as_str())
        );
        assert_eq!(status.phase, Some(crate::api::RolloutPhase::Healthy));
        assert_eq!(
            cluster.revisions.get(&inline_revision),
            Some(&0),
            "the adopted revision gave way to the released one"
        );
    }
}

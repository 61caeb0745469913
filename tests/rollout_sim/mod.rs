//! A tiny pure simulator of the cluster around `rollout::step`: it applies effects to a fake
//! cluster, advances time, marks pods ready, and finishes AnalysisRuns with scripted verdicts.
//! Every reconcile also checks the restart-safety contract (same inputs → same decision, a
//! JSON round trip of status → same decision, re-running on the returned status → same status
//! and no new events).

#![allow(dead_code)] // each test crate uses a different part

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use vigil::api::{
    AnalysisPhase, AnalysisRunSummary, AnalysisStep, BackgroundAnalysis, CanaryStep,
    GatewayApiRouting, MetricSummary, PauseStep, RolloutPhase, RolloutSpec, RolloutStatus,
    TemplateRef, TrafficRouting,
};
use vigil::rollout::scaling::RevisionSettings;
use vigil::rollout::webhooks::{CallKind, WebhookAnswer, WebhookCall, WebhookOutcome};
use vigil::rollout::{
    AnalysisKind, Decision, Effect, Observation, RevisionObservation, ServiceSelection,
    SpecProblem, WorkloadObservation, desired_revision, step,
};
use vigil::traffic::ManagedRoutes;

pub const NAME: &str = "shop";

pub fn set_weight(weight: i32) -> CanaryStep {
    CanaryStep {
        set_weight: Some(weight),
        ..Default::default()
    }
}

pub fn pause(duration: Option<&str>) -> CanaryStep {
    CanaryStep {
        pause: Some(PauseStep {
            duration: duration.map(str::to_owned),
        }),
        ..Default::default()
    }
}

pub fn analysis(template: &str) -> CanaryStep {
    CanaryStep {
        analysis: Some(AnalysisStep {
            templates: vec![TemplateRef {
                template_name: template.into(),
                cluster_scope: false,
            }],
            args: vec![],
        }),
        ..Default::default()
    }
}

/// A pod template labelled `app: shop` (the label [`spec`]'s selector matches).
pub fn template(image: &str) -> PodTemplateSpec {
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some([("app".to_owned(), NAME.to_owned())].into()),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "app".into(),
                image: Some(image.into()),
                ..Default::default()
            }],
            ..Default::default()
        }),
    }
}

/// A spec with a Gateway API router (when `router`) and both services.
pub fn spec(steps: Vec<CanaryStep>, router: bool, replicas: i32) -> RolloutSpec {
    let mut spec = RolloutSpec {
        replicas: Some(replicas),
        selector: LabelSelector {
            match_labels: Some([("app".to_owned(), NAME.to_owned())].into()),
            ..Default::default()
        },
        template: Some(Box::new(template("app:1"))),
        ..Default::default()
    };
    let canary = &mut spec.strategy.canary;
    canary.steps = steps;
    canary.stable_service = Some("shop-stable".into());
    canary.canary_service = Some("shop-canary".into());
    if router {
        canary.traffic_routing = Some(TrafficRouting {
            gateway_api: Some(GatewayApiRouting {
                http_route: "shop".into(),
            }),
            ..TrafficRouting::default()
        });
    }
    spec
}

pub fn with_background(mut spec: RolloutSpec, starting_step: i32) -> RolloutSpec {
    spec.strategy.canary.analysis = Some(BackgroundAnalysis {
        templates: vec![TemplateRef {
            template_name: "background".into(),
            cluster_scope: false,
        }],
        args: vec![],
        starting_step: Some(starting_step),
    });
    spec
}

/// What a run looks like to the verdict script.
pub struct RunInfo<'a> {
    pub name: &'a str,
    pub kind: AnalysisKind,
    /// Seconds since the run was created.
    pub age: i64,
    /// The rollout's status as last recorded.
    pub status: &'a RolloutStatus,
}

/// Decides a run's verdict: `None` keeps it running.
pub type Verdicts = Box<dyn Fn(&RunInfo) -> Option<AnalysisPhase>>;

/// Every run succeeds after 30 s.
pub fn all_pass() -> Verdicts {
    Box::new(|run| (run.age >= 30).then_some(AnalysisPhase::Successful))
}

/// Step runs at the given indices get `phase` (others succeed); background runs pass.
pub fn step_verdict(indices: Vec<i32>, phase: AnalysisPhase) -> Verdicts {
    Box::new(move |run| {
        if run.age < 30 {
            return None;
        }
        match run.kind {
            AnalysisKind::Step { index } if indices.contains(&index) => Some(phase),
            AnalysisKind::Step { .. } => Some(AnalysisPhase::Successful),
            AnalysisKind::Background | AnalysisKind::PrePromotion | AnalysisKind::PostPromotion => {
                None
            }
        }
    })
}

/// The per-metric summary a run with `phase` shows.
pub fn metrics_for(phase: AnalysisPhase) -> Vec<MetricSummary> {
    let metric = |name: &str, phase, value: &str, reason: &str| MetricSummary {
        name: name.into(),
        phase,
        value: Some(value.into()),
        reason: Some(reason.into()),
    };
    match phase {
        AnalysisPhase::Failed => vec![
            metric(
                "latency-p99",
                AnalysisPhase::Successful,
                "0.21",
                "0.21 <= 0.5",
            ),
            metric(
                "error-rate",
                AnalysisPhase::Failed,
                "0.072",
                "error rate 7.2% > 5% threshold",
            ),
        ],
        AnalysisPhase::Inconclusive => vec![metric(
            "error-rate",
            AnalysisPhase::Inconclusive,
            "no data",
            "no data: the canary received no requests",
        )],
        AnalysisPhase::Error => vec![metric(
            "error-rate",
            AnalysisPhase::Error,
            "error",
            "prometheus unreachable: connection refused",
        )],
        _ => vec![],
    }
}

#[derive(Clone, Debug)]
pub struct SimRevision {
    pub replicas: i32,
    pub ready: i32,
    pub created_at: Timestamp,
}

#[derive(Clone, Debug)]
pub struct SimRun {
    pub summary: AnalysisRunSummary,
    pub kind: AnalysisKind,
    pub created_at: Timestamp,
}

/// How a crash interrupts one reconcile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Crash {
    /// Killed after deciding, before acting: nothing happens.
    BeforeEffects,
    /// Killed after executing the first `n` effects, before writing status.
    AfterEffects(usize),
}

pub struct World {
    pub spec: RolloutSpec,
    pub status: RolloutStatus,
    pub now: Timestamp,
    pub generation: i64,
    pub revisions: BTreeMap<String, SimRevision>,
    /// The router's weight; `None` with no router.
    pub router: Option<i32>,
    /// The baseline weight the router reports: `Some` for a router with a three-way split
    /// (the Gateway API with `canary.baseline.service`), `None` otherwise.
    pub baseline_router: Option<i32>,
    /// When false the router ignores SetWeight and route changes (it is broken).
    pub router_works: bool,
    /// The managed header and mirror routes the router holds.
    pub routes: ManagedRoutes,
    /// When false pods never become ready.
    pub pods_get_ready: bool,
    pub services: ServiceSelection,
    pub runs: BTreeMap<String, SimRun>,
    /// The runs deleted by the history limits, in order.
    pub deleted_runs: Vec<String>,
    pub verdicts: Verdicts,
    pub spec_problems: Vec<SpecProblem>,
    /// The Deployment behind `spec.workloadRef`, when the spec has one.
    pub workload: Option<WorkloadObservation>,
    /// Every decision taken, in order.
    pub decisions: Vec<Decision>,
    /// Every event emitted, as (reason, message).
    pub events: Vec<(String, String)>,
    /// Seconds per tick.
    pub tick: i64,
    /// Highest router weight seen while the canary was in a step (not promoting).
    pub max_router_weight_in_steps: i32,
    /// What each webhook (by name) answers when polled; a hook not listed does not answer
    /// (it hangs, or is down).
    pub hook_script: BTreeMap<String, WebhookOutcome>,
    /// The latest answer per poll key, as the shell's caller keeps them (a restarted
    /// controller has none).
    pub hook_answers: BTreeMap<String, WebhookOutcome>,
    /// Every webhook call handed to the shell, in order.
    pub hook_calls: Vec<WebhookCall>,
    /// What each revision's ReplicaSet carries besides the template, as last set.
    pub revision_settings: BTreeMap<String, RevisionSettings>,
}

pub fn start() -> Timestamp {
    "2025-01-01T00:00:00Z".parse().expect("valid timestamp")
}

impl World {
    pub fn new(spec: RolloutSpec, verdicts: Verdicts) -> World {
        let router = spec.strategy.canary.traffic_routing.is_some().then_some(0);
        let baseline_router = vigil::rollout::baseline::service(&spec).map(|_| 0);
        World {
            baseline_router,
            spec,
            status: RolloutStatus::default(),
            now: start(),
            generation: 1,
            revisions: BTreeMap::new(),
            router,
            router_works: true,
            routes: ManagedRoutes::default(),
            pods_get_ready: true,
            services: ServiceSelection::default(),
            runs: BTreeMap::new(),
            deleted_runs: Vec::new(),
            verdicts,
            spec_problems: vec![],
            workload: None,
            decisions: vec![],
            events: vec![],
            tick: 5,
            max_router_weight_in_steps: 0,
            hook_script: BTreeMap::new(),
            hook_answers: BTreeMap::new(),
            hook_calls: vec![],
            revision_settings: BTreeMap::new(),
        }
    }

    /// A world whose first version is deployed and Healthy.
    pub fn deployed(spec: RolloutSpec, verdicts: Verdicts) -> World {
        let mut world = World::new(spec, verdicts);
        world.run_until(50, |w| w.phase() == Some(RolloutPhase::Healthy));
        world
    }

    pub fn phase(&self) -> Option<RolloutPhase> {
        self.status.phase
    }

    pub fn desired(&self) -> String {
        desired_revision(&self.spec, self.workload.as_ref())
    }

    /// A new image: in the spec's template, or in the `workloadRef` Deployment's (which does
    /// not change the Rollout's generation).
    pub fn set_image(&mut self, image: &str) {
        match &mut self.workload {
            Some(workload) if self.spec.template.is_none() => workload.template = template(image),
            _ => {
                self.spec.template = Some(Box::new(template(image)));
                self.generation += 1;
            }
        }
    }

    pub fn observe(&self) -> Observation {
        Observation {
            rollout_name: NAME.into(),
            generation: Some(self.generation),
            desired_revision: self.desired(),
            revisions: self
                .revisions
                .iter()
                .map(|(name, r)| RevisionObservation {
                    revision: name.clone(),
                    replicas: r.replicas,
                    ready_replicas: r.ready,
                    created_at: Some(r.created_at),
                })
                .collect(),
            router_canary_weight: self.router,
            router_baseline_weight: self.baseline_router,
            router_managed_routes: Some(self.routes.clone()),
            services: self.services.clone(),
            analysis_runs: self.runs.values().map(|r| r.summary.clone()).collect(),
            analysis_run_created_at: self
                .runs
                .iter()
                .map(|(name, run)| (name.clone(), run.created_at))
                .collect(),
            spec_problems: self.spec_problems.clone(),
            workload: self.workload.clone(),
            webhook_answers: self
                .hook_answers
                .iter()
                .map(|(key, outcome)| WebhookAnswer {
                    key: key.clone(),
                    outcome: outcome.clone(),
                })
                .collect(),
            revision_settings: self.revision_settings.clone(),
        }
    }

    /// The shell's half: polls get the scripted answer (seen at the next reconcile), every
    /// call is recorded.
    fn call_webhooks(&mut self, calls: &[WebhookCall]) {
        for call in calls {
            if call.kind == CallKind::Poll
                && let Some(outcome) = self.hook_script.get(&call.name)
            {
                self.hook_answers.insert(call.key.clone(), outcome.clone());
            }
            self.hook_calls.push(call.clone());
        }
    }

    /// The calls made to the hook `name`.
    pub fn calls_to(&self, name: &str) -> Vec<&WebhookCall> {
        self.hook_calls.iter().filter(|c| c.name == name).collect()
    }

    /// One reconcile: decide (checking restart safety), act, record.
    pub fn reconcile(&mut self) -> Decision {
        self.reconcile_with(None)
    }

    pub fn reconcile_with(&mut self, crash: Option<Crash>) -> Decision {
        let observation = self.observe();
        let decision = step(&self.spec, &self.status, &observation, self.now);
        check_restart_safety(&self.spec, &self.status, &observation, self.now, &decision);
        match crash {
            Some(Crash::BeforeEffects) => {}
            Some(Crash::AfterEffects(n)) => {
                for effect in decision.effects.iter().take(n) {
                    self.apply(effect);
                }
            }
            None => {
                for effect in &decision.effects {
                    self.apply(effect);
                }
                self.call_webhooks(&decision.webhook_calls);
                // Status is stored as JSON, as the API server does.
                let json = serde_json::to_string(&decision.status).expect("status to JSON");
                self.status = serde_json::from_str(&json).expect("status from JSON");
            }
        }
        self.track_router_weight();
        self.decisions.push(decision.clone());
        decision
    }

    fn track_router_weight(&mut self) {
        let steps = self.spec.strategy.canary.steps.len() as i32;
        let in_steps = self.status.canary_revision.is_some()
            && !self.status.abort
            && self.status.current_step_index.is_some_and(|i| i < steps);
        if in_steps && let Some(weight) = self.router {
            self.max_router_weight_in_steps = self.max_router_weight_in_steps.max(weight);
        }
    }

    pub fn apply(&mut self, effect: &Effect) {
        match effect {
            Effect::ScaleRevision { revision, replicas } => {
                let now = self.now;
                let entry = self
                    .revisions
                    .entry(revision.clone())
                    .or_insert(SimRevision {
                        replicas: 0,
                        ready: 0,
                        created_at: now,
                    });
                entry.replicas = *replicas;
                entry.ready = entry.ready.min(*replicas);
            }
            Effect::SetWeight { canary_weight } => {
                if self.router_works && self.router.is_some() {
                    self.router = Some(*canary_weight);
                }
            }
            Effect::SetBaselineWeight { baseline_weight } => {
                assert!(
                    self.baseline_router.is_some(),
                    "a baseline weight for a router that reports none: {effect:?}"
                );
                if self.router_works {
                    self.baseline_router = Some(*baseline_weight);
                }
            }
            Effect::PointBaselineService { revision } => {
                assert_eq!(
                    self.baseline_router.unwrap_or(0),
                    0,
                    "the baseline Service moves only without traffic"
                );
                self.services.baseline = Some(revision.clone());
            }
            Effect::SetHeaderRoute { .. }
            | Effect::RemoveHeaderRoute { .. }
            | Effect::SetMirrorRoute { .. }
            | Effect::RemoveMirrorRoute { .. } => {
                if self.router_works {
                    self.routes = apply_route(&self.routes, effect);
                }
            }
            Effect::CreateAnalysisRun { name, kind, .. } => {
                let now = self.now;
                self.runs.entry(name.clone()).or_insert(SimRun {
                    summary: AnalysisRunSummary {
                        name: name.clone(),
                        phase: AnalysisPhase::Running,
                        message: None,
                        metrics: vec![],
                        score: None,
                    },
                    kind: *kind,
                    created_at: now,
                });
            }
            Effect::TerminateAnalysisRun { name } => {
                if let Some(run) = self.runs.get_mut(name)
                    && !run.summary.phase.is_completed()
                {
                    run.summary.phase = AnalysisPhase::Terminated;
                }
            }
            Effect::DeleteAnalysisRun { name } => {
                if let Some(run) = self.runs.remove(name) {
                    assert!(
                        run.summary.phase.is_completed(),
                        "a run still running was deleted: {name}"
                    );
                    self.deleted_runs.push(name.clone());
                }
            }
            Effect::PointServices { stable, canary } => {
                if let Some(stable) = stable {
                    self.services.stable = Some(stable.clone());
                }
                if let Some(canary) = canary {
                    self.services.canary = Some(canary.clone());
                }
            }
            Effect::DeleteRevision { revision } => {
                self.revisions.remove(revision);
                self.revision_settings.remove(revision);
            }
            Effect::SetRevisionSettings { revision, settings } => {
                self.revision_settings
                    .insert(revision.clone(), settings.clone());
            }
            Effect::ScaleDownWorkload { observed, replicas } => {
                let workload = self.workload.as_mut().expect("a Deployment to scale down");
                // The shell's `test` op: a stale observation changes nothing.
                if workload.replicas == *observed {
                    workload.replicas = *replicas;
                }
            }
            Effect::Event {
                reason, message, ..
            } => self.events.push((reason.clone(), message.clone())),
        }
    }

    /// Time passes: pods become ready, runs reach their verdicts.
    pub fn advance(&mut self, seconds: i64) {
        self.now = self
            .now
            .checked_add(SignedDuration::from_secs(seconds))
            .expect("time in range");
        if self.pods_get_ready {
            for revision in self.revisions.values_mut() {
                revision.ready = revision.replicas;
            }
        }
        let now = self.now;
        let status = self.status.clone();
        for run in self.runs.values_mut() {
            if run.summary.phase.is_completed() {
                continue;
            }
            let info = RunInfo {
                name: &run.summary.name,
                kind: run.kind,
                age: now.duration_since(run.created_at).as_secs(),
                status: &status,
            };
            if let Some(phase) = (self.verdicts)(&info) {
                run.summary.phase = phase;
                run.summary.metrics = metrics_for(phase);
                run.summary.message = Some(format!("run {phase:?}"));
            }
        }
    }

    /// Reconcile and let time pass until `done` holds; panics after `max` reconciles.
    pub fn run_until(&mut self, max: usize, done: impl Fn(&World) -> bool) {
        for _ in 0..max {
            if done(self) {
                return;
            }
            self.reconcile();
            let tick = self.tick;
            self.advance(tick);
        }
        assert!(
            done(self),
            "not done after {max} reconciles; status: {:#?}\nlast effects: {:#?}",
            self.status,
            self.decisions.last().map(|d| &d.effects)
        );
    }

    pub fn step_index(&self) -> Option<i32> {
        self.status.current_step_index
    }

    pub fn at_step(&self, index: i32) -> bool {
        self.status.current_step_index == Some(index)
    }

    pub fn healthy_on(&self, revision: &str) -> bool {
        self.phase() == Some(RolloutPhase::Healthy)
            && self.status.stable_revision.as_deref() == Some(revision)
            && self.status.canary_revision.is_none()
    }

    pub fn replicas_of(&self, revision: &str) -> i32 {
        self.revisions.get(revision).map_or(0, |r| r.replicas)
    }

    pub fn event_reasons(&self) -> Vec<String> {
        self.events
            .iter()
            .map(|(reason, _)| reason.clone())
            .collect()
    }

    // The CLI's requests, written into status as `vigil` does.
    pub fn promote(&mut self) {
        self.status.promote_step = self.status.current_step_index;
    }

    pub fn promote_full(&mut self) {
        self.status.promote_full = true;
    }

    pub fn abort(&mut self) {
        self.status.abort = true;
    }

    pub fn retry(&mut self) {
        self.status.abort = false;
    }
}

/// Same inputs give the same decision; status through JSON gives the same decision; deciding
/// again on the returned status changes nothing and emits no events (a controller killed
/// after writing status re-derives the same state).
pub fn check_restart_safety(
    spec: &RolloutSpec,
    status: &RolloutStatus,
    observation: &Observation,
    now: Timestamp,
    decision: &Decision,
) {
    let again = step(spec, status, observation, now);
    assert_eq!(&again, decision, "step is not deterministic");

    let json = serde_json::to_string(status).expect("status to JSON");
    let round_tripped: RolloutStatus = serde_json::from_str(&json).expect("status from JSON");
    let from_json = step(spec, &round_tripped, observation, now);
    assert_eq!(
        &from_json, decision,
        "a status read back from JSON gives another decision"
    );

    let json = serde_json::to_string(&decision.status).expect("status to JSON");
    let stored: RolloutStatus = serde_json::from_str(&json).expect("status from JSON");
    assert_eq!(
        stored, decision.status,
        "status does not survive a JSON round trip"
    );
    let settled = step(spec, &stored, observation, now);
    assert_eq!(
        settled.status, decision.status,
        "deciding again on the returned status moved the rollout further"
    );
    let new_events: Vec<&Effect> = settled
        .effects
        .iter()
        .filter(|e| matches!(e, Effect::Event { .. }))
        .collect();
    assert!(
        new_events.is_empty(),
        "deciding again emitted events: {new_events:?}"
    );
    for effect in &settled.effects {
        // A finished run the status observed still showed (or made, in the attempt then in
        // flight) is deleted only once a stored status has left it: deciding again on the
        // stored status may delete it, by design (see `vigil::rollout::run_history`).
        if let Effect::DeleteAnalysisRun { name } = effect
            && kept_by(status, name)
        {
            continue;
        }
        assert!(
            decision.effects.contains(effect),
            "deciding again emitted a new effect {effect:?}; first: {:?}",
            decision.effects
        );
    }
}

/// Whether `status` keeps the run `name` from the history limits: it shows it, or the canary
/// attempt it has in flight made it.
fn kept_by(status: &RolloutStatus, name: &str) -> bool {
    let shown = [&status.step_analysis, &status.background_analysis]
        .into_iter()
        .flatten()
        .any(|run| run.name == name);
    let in_flight = status.canary_revision.as_ref().is_some_and(|canary| {
        name.starts_with(&format!("{NAME}-{canary}-{}-", status.canary_attempt))
    });
    shown || in_flight
}

/// The routes a router holds after a route effect.
fn apply_route(routes: &ManagedRoutes, effect: &Effect) -> ManagedRoutes {
    let (mut header, mut mirror) = (routes.header.clone(), routes.mirror.clone());
    match effect {
        Effect::SetHeaderRoute { route } => {
            header.retain(|r| r.name != route.name);
            header.push(route.clone());
        }
        Effect::RemoveHeaderRoute { name } => header.retain(|r| r.name != *name),
        Effect::SetMirrorRoute { route } => {
            mirror.retain(|r| r.name != route.name);
            mirror.push(route.clone());
        }
        Effect::RemoveMirrorRoute { name } => mirror.retain(|r| r.name != *name),
        _ => {}
    }
    ManagedRoutes::new(header, mirror)
}

/// A blue-green spec (services `shop-active` / `shop-preview`) with `replicas` pods, shaped
/// further by `configure`.
pub fn blue_green_spec(
    replicas: i32,
    configure: impl FnOnce(&mut vigil::api::BlueGreenStrategy),
) -> RolloutSpec {
    let mut spec = spec(vec![], false, replicas);
    spec.strategy.canary = Default::default();
    let mut bg = vigil::api::BlueGreenStrategy {
        active_service: Some("shop-active".into()),
        preview_service: Some("shop-preview".into()),
        ..Default::default()
    };
    configure(&mut bg);
    spec.strategy.blue_green = Some(bg);
    spec
}

/// An analysis of one template, for `prePromotionAnalysis` / `postPromotionAnalysis`.
pub fn promotion_analysis(template: &str) -> AnalysisStep {
    AnalysisStep {
        templates: vec![TemplateRef {
            template_name: template.into(),
            cluster_scope: false,
        }],
        args: vec![],
    }
}

/// Pre- and post-promotion runs get these verdicts after 30 s (`None`: they keep running).
pub fn promotion_verdicts(pre: Option<AnalysisPhase>, post: Option<AnalysisPhase>) -> Verdicts {
    Box::new(move |run| {
        if run.age < 30 {
            return None;
        }
        match run.kind {
            AnalysisKind::PrePromotion => pre,
            AnalysisKind::PostPromotion => post,
            _ => Some(AnalysisPhase::Successful),
        }
    })
}

//! The Rollout controller: [`reconcile_once`] (observe with the dereference step →
//! [`rollout::step`] → act → record status) → requeue, as the pure core's module docs describe
//! (`crate::rollout`). One file per concern: `error` (why a reconcile failed), `router` (the
//! traffic router), `platform` (observe and the [`Platform`] impl), `dereference` (each
//! declared analysis's templates from the cache, arguments resolved, run built), `act` (executing effects); here: the reconcile, its requeue, status writes,
//! cleanup and the controller's wiring.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::events::{EventNote, EventType as KubeEventType};
use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Secret, Service};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::WatchStreamExt as _;
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::finalizer::{self, Event as Finalizer, finalizer};
use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tokio::sync::mpsc::UnboundedReceiver;
use tracing::{Instrument, debug, info, warn};

use super::cache::{Index, lean_watch_events};
use super::context::{
    Context, FIELD_MANAGER, FINALIZER, MANAGED_BY_ANNOTATION, REVISION_LABEL, ROLLOUT_LABEL,
    TemplateIndex, rollout_label_value,
};
use super::lean_meta::Lean;
use super::observe::{Seen, WorkloadSeen, observation};
use super::resources::{
    analysis_run_for, baseline_replica_set_for, field_ref_value, replica_set_for, replica_set_name,
    scale_down_patch, secret_value,
};
use super::watch_health::{WatchHealth, observed};
use crate::analysis::dereference::{Dereferenced, RunFor, SecretArgs, run_spec};
use crate::analysis::instantiate::InstantiateError;
use crate::api::{
    AnalysisRun, AnalysisRunSpec, AnalysisTemplate, AnalysisTemplateSpec, Argument,
    ClusterAnalysisTemplate, Rollout, RolloutPhase, RolloutStatus, TemplateRef,
};
use crate::platform::reconcile::{Observed, Platform, reconcile_once};
use crate::rollout::baseline::baseline_of;
use crate::rollout::{self, AnalysisKind, Decision, Effect, EventType, Observation, SpecProblem};
use crate::traffic::gateway_api::{GatewayRoute, http_route_resource};
use crate::traffic::istio::{
    IstioRouter, IstioRouterParts, destination_rule_resource, virtual_service_resource,
};
use crate::traffic::objects::WrittenVersions;
use crate::traffic::replicas::ReplicaRatio;
use crate::traffic::{ManagedRoutes, TrafficError, TrafficRouter, foreign_weight_edit};

mod act;
pub mod cached_template;
mod dereference;
mod error;
mod platform;
mod router;
mod status_write;

use act::*;
pub(crate) use dereference::rollouts_using;
use dereference::*;
pub use error::Error;
use error::{already_exists, conflict, not_found};
use platform::*;
use router::*;
use status_write::{patch_status, status_patch};

/// How soon a Rollout is looked at again while the caches have not listed yet (just
/// started) or its copy predates vigil's own last status write (the watch is delivering it).
const WAIT_FOR_CACHE: Duration = Duration::from_millis(200);
/// A rollout in flight is looked at at least this often, even with no event.
const RESYNC: Duration = Duration::from_secs(300);
/// How soon a Rollout held because its analysis cannot start, or its router object is
/// missing or malformed, looks again. Templates are watched (a change wakes the Rollouts
/// using them at once); Secrets behind arguments and router objects are not.
const RECHECK_HELD_ANALYSIS: Duration = Duration::from_secs(20);
/// After a status write conflict: the CLI wrote a request; observe it again at once (the
/// short delay lets the watch deliver the newer object).
const RETRY_CONFLICT: Duration = Duration::from_millis(100);
/// Shortest requeue: time-driven progress has whole-second granularity.
const MIN_REQUEUE: Duration = Duration::from_secs(1);

fn params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    }
}

fn post_params() -> PostParams {
    PostParams {
        dry_run: false,
        field_manager: Some(FIELD_MANAGER.to_owned()),
    }
}

/// The names and APIs one reconcile of one Rollout uses.
struct Scope<'a> {
    rollout: &'a Rollout,
    name: String,
    namespace: String,
    ctx: &'a Context,
}

impl Scope<'_> {
    fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.ctx.client.clone(), &self.namespace)
    }
}

/// One reconcile of a Rollout, behind the `vigil.dev/traffic` finalizer.
pub async fn reconcile(rollout: Arc<Rollout>, ctx: Arc<Context>) -> Result<Action, Error> {
    let rollout = cached_template::unpack(rollout);
    let name = rollout.name_any();
    let namespace = rollout.namespace().unwrap_or_default();
    let span = tracing::info_span!("reconcile", rollout = %name, namespace = %namespace);
    async move {
        ctx.metrics.reconciles.inc();
        let started = Instant::now();
        let result = super::catch_reconcile_panic(reconcile_inner(rollout, &ctx))
            .await
            .unwrap_or_else(|message| {
                tracing::error!(%message, "rollout reconcile panicked");
                Err(Error::ReconcilePanicked { message })
            });
        ctx.metrics
            .reconcile_duration
            .observe(started.elapsed().as_secs_f64());
        if result.is_ok() {
            ctx.backoff.succeeded(&format!("{namespace}/{name}"));
        }
        result
    }
    .instrument(span)
    .await
}

async fn reconcile_inner(rollout: Arc<Rollout>, ctx: &Context) -> Result<Action, Error> {
    let namespace = rollout.namespace().ok_or(Error::MissingObjectKey {
        key: "metadata.namespace",
    })?;
    if let Some(resource) = ctx.caches.unsynced() {
        debug!(resource, "waiting for the cache to list");
        return Ok(Action::requeue(WAIT_FOR_CACHE));
    }
    let written = WrittenVersions::key("Rollout", &namespace, &rollout.name_any());
    if ctx
        .caches
        .written
        .is_stale(&written, rollout.resource_version().as_deref())
    {
        // Deciding on this copy would write a status over the newer one (a 409 at best).
        debug!("the cache has yet to show the last status written; waiting for it");
        return Ok(Action::requeue(WAIT_FOR_CACHE));
    }
    let api: Api<Rollout> = Api::namespaced(ctx.client.clone(), &namespace);
    if rollout.meta().deletion_timestamp.is_none()
        && !rollout.finalizers().iter().any(|f| f == FINALIZER)
    {
        return add_finalizer(&api, &rollout, &ctx.caches.written).await;
    }
    finalizer(&api, FINALIZER, rollout, |event| async {
        match event {
            Finalizer::Apply(rollout) => apply(&rollout, ctx).await,
            Finalizer::Cleanup(rollout) => cleanup(&rollout, ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

/// Adds `vigil.dev/traffic` with a JSON patch guarded by the observed resourceVersion (kube's
/// finalizer helper tests `/metadata/finalizers` against null instead, which some API servers
/// reject when the field is absent). The watch event of the change triggers the next
/// reconcile.
async fn add_finalizer(
    api: &Api<Rollout>,
    rollout: &Rollout,
    written: &WrittenVersions,
) -> Result<Action, Error> {
    let name = rollout.name_any();
    use json_patch::jsonptr::PointerBuf;
    use json_patch::{AddOperation, PatchOperation, TestOperation};
    let guard = PatchOperation::Test(TestOperation {
        path: PointerBuf::from_tokens(["metadata", "resourceVersion"]),
        value: json!(rollout.resource_version()),
    });
    let add = if rollout.meta().finalizers.is_none() {
        AddOperation {
            path: PointerBuf::from_tokens(["metadata", "finalizers"]),
            value: json!([FINALIZER]),
        }
    } else {
        AddOperation {
            path: PointerBuf::from_tokens(["metadata", "finalizers", "-"]),
            value: json!(FINALIZER),
        }
    };
    let patch = json_patch::Patch(vec![guard, PatchOperation::Add(add)]);
    match api.patch(&name, &params(), &Patch::Json::<()>(patch)).await {
        Ok(patched) => {
            written.wrote(
                WrittenVersions::key("Rollout", &rollout.namespace().unwrap_or_default(), &name),
                patched.resource_version().as_deref(),
            );
            Ok(Action::await_change())
        }
        // Changed meanwhile (a 409, or the test op failing with 422): look again.
        Err(kube::Error::Api(status)) if status.is_conflict() || status.is_invalid() => {
            Ok(Action::requeue(RETRY_CONFLICT))
        }
        Err(source) => Err(Error::Finalizer(Box::new(finalizer::Error::AddFinalizer(
            source,
        )))),
    }
}

async fn apply(rollout: &Rollout, ctx: &Context) -> Result<Action, Error> {
    let now = ctx.clock.now();
    let scope = Scope {
        rollout,
        name: rollout.name_any(),
        namespace: rollout.namespace().unwrap_or_default(),
        ctx,
    };
    let router = Router::of(rollout, &ctx.client, &scope.namespace, &ctx.caches);
    let mut platform = KubeRollout {
        scope,
        router,
        seen: None,
        prepared: Vec::new(),
        blocked: false,
        held: None,
    };
    let reconciled = match reconcile_once(&mut platform, now).await {
        Ok(reconciled) => reconciled,
        Err(Error::PrepareAnalysis { problem, source }) => {
            // The analysis cannot start: hold with the problem in status (as any invalid
            // spec); a template change wakes this Rollout, and it looks again later anyway.
            warn!(path = %problem.path, error = %source, "analysis cannot start; holding");
            platform.held = Some(problem);
            let held = reconcile_once(&mut platform, now).await?;
            return Ok(held
                .recorded
                .unwrap_or(Action::requeue(RECHECK_HELD_ANALYSIS)));
        }
        Err(error) => return Err(error),
    };
    if let Some(retry) = reconciled.recorded {
        return Ok(retry);
    }
    Ok(next_action(now, &reconciled.decision, platform.blocked))
}

/// When to look at a reconciled Rollout again.
fn next_action(now: Timestamp, decision: &Decision, blocked: bool) -> Action {
    // Whatever vigil changed is watched: its watch event wakes the Rollout, no polling.
    let mut after = decision.requeue_at.map(|at| until(now, at));
    if blocked {
        after = Some(after.map_or(RECHECK_HELD_ANALYSIS, |a| a.min(RECHECK_HELD_ANALYSIS)));
    }
    let settled = matches!(
        decision.status.phase,
        Some(RolloutPhase::Healthy | RolloutPhase::Degraded | RolloutPhase::Aborted)
    );
    match after {
        Some(delay) => Action::requeue(delay),
        None if settled => Action::await_change(),
        None => Action::requeue(RESYNC),
    }
}

/// Writes `decision.status` when it differs from `status` (the one observed). Returns the
/// action to take instead of going on when the write conflicted with another writer.
async fn record(
    scope: &Scope<'_>,
    status: &RolloutStatus,
    decision: &Decision,
) -> Result<Option<Action>, Error> {
    let ctx = scope.ctx;
    let key = format!("{}/{}", scope.namespace, scope.name);
    let phase = |p: Option<RolloutPhase>| p.map(|p| format!("{p:?}"));
    let (before, after) = (phase(status.phase), phase(decision.status.phase));
    if decision.status == *status {
        ctx.metrics.rollout_phase(&key, before.as_deref());
        return Ok(None);
    }
    // The observed resourceVersion guards the write, so a request the CLI wrote meanwhile
    // makes it conflict instead of vanish.
    let patch = status_patch(
        scope.rollout.metadata.resource_version.as_deref(),
        &decision.status,
    )
    .map_err(|source| Error::SerializeStatus {
        rollout: scope.name.clone(),
        source,
    })?;
    match patch_status(&ctx.client, &scope.namespace, &scope.name, &params(), patch).await {
        Ok(version) => ctx.caches.written.wrote(
            WrittenVersions::key("Rollout", &scope.namespace, &scope.name),
            version.as_deref(),
        ),
        Err(error) if conflict(&error) => {
            debug!("status changed since it was read; observing again");
            ctx.metrics.reconcile_failed("status_conflict");
            return Ok(Some(Action::requeue(RETRY_CONFLICT)));
        }
        Err(source) => {
            return Err(Error::WriteStatus {
                rollout: scope.name.clone(),
                source,
            });
        }
    }
    ctx.metrics.rollout_phase(&key, after.as_deref());
    ctx.metrics.dora.record(
        &scope.namespace,
        &scope.name,
        status,
        &decision.status,
        ctx.clock.now(),
    );
    if before != after {
        let (from, to) = (
            before.as_deref().unwrap_or("None"),
            after.as_deref().unwrap_or("None"),
        );
        ctx.metrics.phase_changed(from, to);
        info!(
            from,
            to,
            message = decision.status.message.as_deref().unwrap_or(""),
            "phase changed"
        );
    }
    Ok(None)
}

/// How long from `now` until `at`, at least [`MIN_REQUEUE`] so nothing spins.
fn until(now: Timestamp, at: Timestamp) -> Duration {
    Duration::try_from(at.duration_since(now))
        .unwrap_or(Duration::ZERO)
        .max(MIN_REQUEUE)
}

/// A Rollout being deleted mid-way: traffic back to the stable version (weight 0, both
/// Services on the stable revision), whichever the router. The router object and Services
/// belong to the user, so
/// owner-reference garbage collection would leave them pointing at pods about to vanish.
async fn cleanup(rollout: &Rollout, ctx: &Context) -> Result<Action, Error> {
    let scope = Scope {
        rollout,
        name: rollout.name_any(),
        namespace: rollout.namespace().unwrap_or_default(),
        ctx,
    };
    ctx.metrics
        .rollout_phase(&format!("{}/{}", scope.namespace, scope.name), None);
    ctx.metrics.dora.forget(&scope.namespace, &scope.name);
    let status = rollout.status.clone().unwrap_or_default();
    let Some(stable) = status.stable_revision.as_deref() else {
        return Ok(Action::await_change());
    };
    let router = Router::of(rollout, &ctx.client, &scope.namespace, &ctx.caches);
    match router.set_baseline_weight(0).await {
        Ok(()) => {}
        Err(error) if error.object_missing() => {}
        // A route that does not list the baseline Service sends it nothing to take back.
        Err(error @ TrafficError::ReadObject { .. }) => {
            warn!(%error, "the baseline's weight cannot be read; nothing to return");
        }
        Err(source) => {
            return Err(Error::SetBaselineWeight {
                rollout: scope.name.clone(),
                weight: 0,
                source: Box::new(source),
            });
        }
    }
    match router.set_canary_weight(0).await {
        Ok(()) => {}
        // The router object is gone too (namespace deletion): nothing to return.
        Err(error) if error.object_missing() => {}
        Err(source) => {
            return Err(Error::SetWeight {
                rollout: scope.name.clone(),
                weight: 0,
                source: Box::new(source),
            });
        }
    }
    remove_managed_routes(&scope, &router).await?;
    match router.point_revisions(Some(stable), Some(stable)).await {
        Ok(()) => {}
        Err(error) if error.object_missing() => {}
        Err(source) => {
            return Err(Error::PointRouterRevisions {
                rollout: scope.name.clone(),
                source: Box::new(source),
            });
        }
    }
    let (stable_service, canary_service) = crate::rollout::service_names(&rollout.spec);
    for service in [stable_service, canary_service].into_iter().flatten() {
        let observed = read_service(&scope, Some(service)).await?;
        match point_service(&scope, service, observed.as_ref(), stable, Claim::GiveUp).await {
            Err(Error::PatchService { source, .. }) if not_found(&source) => {}
            // Another Rollout's Service: not this one's to return.
            Err(Error::ClaimService { .. }) => {}
            other => other?,
        }
    }
    if let Some(service) = crate::rollout::baseline::service(&rollout.spec) {
        release_service(&scope, service).await?;
    }
    info!(
        stable,
        "traffic returned to the stable revision before deletion"
    );
    Ok(Action::await_change())
}

/// Removes every managed header and mirror route in place (only Rollouts that list
/// `managedRoutes` can have any); a router object that is gone has none left.
async fn remove_managed_routes(scope: &Scope<'_>, router: &Router) -> Result<(), Error> {
    let listed = scope
        .rollout
        .spec
        .strategy
        .canary
        .traffic_routing
        .as_ref()
        .is_some_and(|r| !r.managed_routes.is_empty());
    if !listed {
        return Ok(());
    }
    let in_place = match router.managed_routes().await {
        Ok(routes) => routes,
        Err(error) if error.object_missing() => return Ok(()),
        Err(source) => {
            return Err(Error::SetManagedRoute {
                rollout: scope.name.clone(),
                route: "*".to_owned(),
                source: Box::new(source),
            });
        }
    };
    for name in in_place.present_header() {
        let result = router.remove_header_route(name).await;
        act::route_result(scope, name, result)?;
    }
    for name in in_place.present_mirror() {
        let result = router.remove_mirror_route(name).await;
        act::route_result(scope, name, result)?;
    }
    Ok(())
}

/// What to do after a failed reconcile: an invalid spec waits for a change; anything else
/// retries with a per-object exponential backoff.
pub fn error_policy(rollout: Arc<Rollout>, error: &Error, ctx: Arc<Context>) -> Action {
    let name = rollout.name_any();
    let namespace = rollout.namespace().unwrap_or_default();
    ctx.metrics.reconcile_failed(error.category());
    if error.is_invalid_spec() {
        warn!(rollout = %name, %namespace, %error, category = error.category(), "invalid spec; waiting for a change");
        return Action::await_change();
    }
    let delay = ctx.backoff.failed(&format!("{namespace}/{name}"));
    warn!(rollout = %name, %namespace, %error, category = error.category(), retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// What the Rollout controller is given besides its context: the store its Rollout watch
/// fills, the index of what Rollouts reference (kept with it), and the Rollouts the other
/// watches woke.
pub struct RolloutInputs {
    /// Filled by the Rollout watch; its reader is shared with whoever maps events to
    /// Rollouts (the templates' watch).
    pub writer: Writer<Rollout>,
    /// The Services, Deployments and router objects each Rollout names.
    pub references: Index<Rollout>,
    /// Rollouts to reconcile because something they read changed.
    pub wake: UnboundedReceiver<ObjectRef<Rollout>>,
    /// The sending end of `wake`: a Rollout that stops naming a Service (or is deleted) wakes
    /// the others naming it, which may have been held by its claim.
    pub wake_sender: tokio::sync::mpsc::UnboundedSender<ObjectRef<Rollout>>,
    /// Where the Rollout watch reports its health.
    pub health: WatchHealth,
}

/// Wakes the Rollouts filed under the index key `key` (`Kind/namespace/name`).
fn wake_naming(
    references: &Index<Rollout>,
    key: &str,
    wake: &tokio::sync::mpsc::UnboundedSender<ObjectRef<Rollout>>,
) {
    for (namespace, name) in references.lookup(key) {
        // The receiver is gone only when the controller stops.
        let _ = wake.send(ObjectRef::new(&name).within(&namespace));
    }
}

/// Runs the Rollout controller until `shutdown` resolves: Rollouts in the namespace in
/// scope (all when none) matching its selector, woken by their own changes and by
/// `inputs.wake`.
pub async fn run(
    ctx: Arc<Context>,
    watch: &super::WatchScope,
    inputs: RolloutInputs,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let RolloutInputs {
        writer,
        references,
        wake,
        wake_sender,
        health,
    } = inputs;
    let reader = writer.as_reader();
    let rollouts = lean_watch_events(
        watch.api::<Lean<Rollout>>(&ctx.client),
        watch.watcher_config(),
    )
    .default_backoff()
    // Field ownership and the `kubectl apply` copy are never read (annotations are:
    // notification subscriptions); the pod template is kept as JSON until a reconcile.
    .modify(|rollout: &mut Rollout| {
        super::cache::trim_meta(&mut rollout.metadata);
        cached_template::pack(rollout);
    })
    // The index first: a Rollout is found by what it names once the store has it.
    .inspect(move |event| {
        if let Ok(event) = event {
            for dropped in references.apply(event) {
                if dropped.starts_with("Service/") {
                    wake_naming(&references, &dropped, &wake_sender);
                }
            }
        }
    })
    .reflect(writer);
    let rollouts = observed(rollouts, "Rollout", health, ctx.metrics.clone()).applied_objects();
    let woken = futures::stream::unfold(wake, |mut wake| async move {
        wake.recv().await.map(|rollout| (rollout, wake))
    });
    Controller::for_stream(rollouts, reader)
        .reconcile_on(woken)
        .with_config(Config::default().concurrency(watch.concurrency))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(error) = result {
                debug!(%error, "rollout controller");
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use kube::runtime::{reflector, watcher};
    use serde_json::json;

    use super::*;

    fn rollout(namespace: &str, name: &str, templates: serde_json::Value) -> Rollout {
        serde_json::from_value(json!({
            "apiVersion": "vigil.dev/v1alpha1",
            "kind": "Rollout",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}}},
                "strategy": {"canary": {"steps": [
                    {"setWeight": 20},
                    {"analysis": {"templates": templates}}
                ]}}
            }
        }))
        .expect("rollout")
    }

    #[test]
    fn a_deployment_wakes_only_the_rollouts_that_adopt_it() {
        let adopting = |namespace: &str, name: &str, deployment: &str| -> Rollout {
            serde_json::from_value(json!({
                "apiVersion": "vigil.dev/v1alpha1",
                "kind": "Rollout",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {
                    "selector": {"matchLabels": {"app": name}},
                    "workloadRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment},
                    "strategy": {"canary": {}}
                }
            }))
            .expect("rollout")
        };
        let references = Index::new(super::super::cache::references);
        for rollout in [
            adopting("shop", "checkout", "checkout"),
            adopting("shop", "checkout-eu", "checkout"),
            adopting("bank", "checkout", "checkout"),
            adopting("shop", "cart", "cart"),
            rollout("shop", "inline", json!([{"templateName": "errors"}])),
        ] {
            references.apply(&watcher::Event::Apply(rollout));
        }
        let adopting = |namespace: &str, name: &str| {
            super::super::cache::rollouts_referencing(&references, "Deployment", namespace, name)
        };
        let names: Vec<String> = adopting("shop", "checkout")
            .into_iter()
            .map(|r| r.name)
            .collect();
        assert_eq!(names, ["checkout", "checkout-eu"]);
        assert!(adopting("shop", "inline").is_empty());
        assert!(adopting("other", "checkout").is_empty());
    }

    #[test]
    fn a_template_wakes_only_the_rollouts_that_use_it() {
        let (store, mut writer) = reflector::store::<Rollout>();
        for rollout in [
            rollout("shop", "checkout", json!([{"templateName": "errors"}])),
            rollout("shop", "cart", json!([{"templateName": "latency"}])),
            rollout("bank", "ledger", json!([{"templateName": "errors"}])),
            rollout(
                "bank",
                "audit",
                json!([{"templateName": "errors", "clusterScope": true}]),
            ),
        ] {
            writer.apply_watcher_event(&watcher::Event::Apply(rollout));
        }
        let names = |refs: Vec<ObjectRef<Rollout>>| {
            let mut names: Vec<String> = refs.into_iter().map(|r| r.name).collect();
            names.sort();
            names
        };
        assert_eq!(
            names(rollouts_using(&store, Some("shop"), "errors")),
            ["checkout"]
        );
        assert_eq!(
            names(rollouts_using(&store, None, "errors")),
            ["audit"],
            "a ClusterAnalysisTemplate wakes only cluster-scoped references"
        );
        assert!(rollouts_using(&store, Some("shop"), "unused").is_empty());
    }

    #[test]
    fn references_to_templates_that_do_not_exist_are_spec_problems_at_their_fields() {
        let (namespaced, mut writer) = reflector::store::<AnalysisTemplate>();
        let (cluster, mut cluster_writer) = reflector::store::<ClusterAnalysisTemplate>();
        let mut errors = AnalysisTemplate::new("errors", Default::default());
        errors.metadata.namespace = Some("shop".into());
        writer.apply_watcher_event(&watcher::Event::Apply(errors));
        cluster_writer.apply_watcher_event(&watcher::Event::Apply(ClusterAnalysisTemplate::new(
            "latency",
            Default::default(),
        )));
        let index = TemplateIndex {
            namespaced,
            cluster,
        };
        let rollout = rollout(
            "shop",
            "web",
            json!([
                {"templateName": "errors"},
                {"templateName": "latency", "clusterScope": true},
                {"templateName": "latency"},
                {"templateName": "errors", "clusterScope": true}
            ]),
        );
        let problems = missing_templates(&rollout, "shop", &index);
        let found: Vec<(&str, &str)> = problems
            .iter()
            .map(|p| (p.path.as_str(), p.message.as_str()))
            .collect();
        assert_eq!(
            found,
            [
                (
                    "spec.strategy.canary.steps[1].analysis.templates[2].templateName",
                    "AnalysisTemplate \"latency\" does not exist in namespace \"shop\""
                ),
                (
                    "spec.strategy.canary.steps[1].analysis.templates[3].templateName",
                    "ClusterAnalysisTemplate \"errors\" does not exist"
                ),
            ]
        );
        // The same template in another namespace is not this one.
        assert_eq!(missing_templates(&rollout, "bank", &index).len(), 3);
    }
}

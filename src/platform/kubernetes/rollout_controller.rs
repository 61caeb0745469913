//! The Rollout controller: observe → [`rollout::step`] → act → record status → requeue, as
//! the pure core's module docs describe (`crate::rollout`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Secret, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::events::{Event as KubeEvent, EventType as KubeEventType};
use kube::runtime::finalizer::{self, Event as Finalizer, finalizer};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tracing::{Instrument, debug, info, warn};

use super::context::{
    Context, FIELD_MANAGER, FINALIZER, ROLLOUT_LABEL, TemplateIndex, rollout_label_value,
};
use super::observe::{Seen, observation};
use super::resources::{
    analysis_run_for, field_ref_value, replica_set_for, replica_set_name, secret_value,
};
use crate::analysis::instantiate::{InstantiateError, builtin_args, instantiate_with_secret_refs};
use crate::api::{
    AnalysisRun, AnalysisTemplate, Argument, ClusterAnalysisTemplate, Rollout, RolloutPhase,
    RolloutStatus, TemplateRef,
};
use crate::rollout::{self, AnalysisKind, Decision, Effect, EventType, SpecProblem};
use crate::traffic::gateway_api::{GatewayRoute, http_route_resource};
use crate::traffic::replicas::ReplicaRatio;
use crate::traffic::{TrafficError, TrafficRouter};

/// After acting, look again this soon: Services and the HTTPRoute are not watched, so a
/// change vigil made there is observed by polling.
const RECHECK_AFTER_ACTING: Duration = Duration::from_secs(2);
/// A rollout in flight is looked at at least this often, even with no event.
const RESYNC: Duration = Duration::from_secs(300);
/// How soon a Rollout held because its analysis cannot start looks again. Templates are
/// watched (a change wakes the Rollouts using them at once); Secrets behind arguments are not.
const RECHECK_HELD_ANALYSIS: Duration = Duration::from_secs(20);
/// After a status write conflict: the CLI wrote a request; observe it again at once (the
/// short delay lets the watch deliver the newer object).
const RETRY_CONFLICT: Duration = Duration::from_millis(100);
/// Shortest requeue: time-driven progress has whole-second granularity.
const MIN_REQUEUE: Duration = Duration::from_secs(1);

/// Why a reconcile of a Rollout failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The reconcile panicked (a bug): counted and retried with backoff, others go on.
    #[error("reconcile panicked: {message}")]
    ReconcilePanicked {
        /// The panic's message.
        message: String,
    },
    /// The object lacks a field every stored object has.
    #[error("rollout has no {key}")]
    MissingObjectKey {
        /// The field.
        key: &'static str,
    },
    /// Listing the Rollout's ReplicaSets failed.
    #[error("failed to list the ReplicaSets of rollout {rollout}: {source}")]
    ListReplicaSets {
        /// The Rollout.
        rollout: String,
        /// The cause.
        source: kube::Error,
    },
    /// Reading a Service failed.
    #[error("failed to get service {service}: {source}")]
    GetService {
        /// The Service.
        service: String,
        /// The cause.
        source: kube::Error,
    },
    /// Listing the Rollout's AnalysisRuns failed.
    #[error("failed to list the AnalysisRuns of rollout {rollout}: {source}")]
    ListAnalysisRuns {
        /// The Rollout.
        rollout: String,
        /// The cause.
        source: kube::Error,
    },
    /// Scaling a ReplicaSet failed.
    #[error("failed to scale ReplicaSet {replica_set} to {replicas}: {source}")]
    ScaleReplicaSet {
        /// The ReplicaSet.
        replica_set: String,
        /// Pods wanted.
        replicas: i32,
        /// The cause.
        source: kube::Error,
    },
    /// Creating a revision's ReplicaSet failed.
    #[error("failed to create ReplicaSet {replica_set}: {source}")]
    CreateReplicaSet {
        /// The ReplicaSet.
        replica_set: String,
        /// The cause.
        source: kube::Error,
    },
    /// Deleting an old revision failed.
    #[error("failed to delete ReplicaSet {replica_set}: {source}")]
    DeleteReplicaSet {
        /// The ReplicaSet.
        replica_set: String,
        /// The cause.
        source: kube::Error,
    },
    /// Setting the router's weight failed.
    #[error("failed to set the canary weight of rollout {rollout} to {weight}: {source}")]
    SetWeight {
        /// The Rollout.
        rollout: String,
        /// The weight.
        weight: i32,
        /// The cause.
        source: TrafficError,
    },
    /// Reading an AnalysisTemplate or ClusterAnalysisTemplate failed.
    #[error("failed to get analysis template {template}: {source}")]
    GetTemplate {
        /// The template (`cluster/` prefixed for a ClusterAnalysisTemplate).
        template: String,
        /// The cause.
        source: kube::Error,
    },
    /// An argument's `valueFrom` could not be read.
    #[error("failed to resolve argument {arg}: {reason}")]
    ResolveArg {
        /// The argument.
        arg: String,
        /// Why (never the value).
        reason: String,
    },
    /// An analysis cannot start because of the spec: a template that does not exist, an
    /// argument that does not resolve, templates that do not combine. The Rollout holds and
    /// says why in status.
    #[error("{}: {}", problem.path, problem.message)]
    PrepareAnalysis {
        /// The field at fault and what is wrong, as status shows it.
        problem: SpecProblem,
        /// The failure behind it.
        source: Box<Error>,
    },
    /// The templates and arguments do not make a run.
    #[error("failed to build AnalysisRun {run}: {source}")]
    Instantiate {
        /// The run.
        run: String,
        /// The cause.
        source: InstantiateError,
    },
    /// Creating an AnalysisRun failed.
    #[error("failed to create AnalysisRun {run}: {source}")]
    CreateAnalysisRun {
        /// The run.
        run: String,
        /// The cause.
        source: kube::Error,
    },
    /// Terminating an AnalysisRun failed.
    #[error("failed to terminate AnalysisRun {run}: {source}")]
    TerminateAnalysisRun {
        /// The run.
        run: String,
        /// The cause.
        source: kube::Error,
    },
    /// Pointing a Service at a revision failed.
    #[error("failed to point service {service} at revision {revision}: {source}")]
    PatchService {
        /// The Service.
        service: String,
        /// The revision.
        revision: String,
        /// The cause.
        source: kube::Error,
    },
    /// Recording the status failed.
    #[error("failed to replace the status of rollout {rollout}: {source}")]
    ReplaceStatus {
        /// The Rollout.
        rollout: String,
        /// The cause.
        source: kube::Error,
    },
    /// Adding or removing the finalizer failed, or the reconcile inside it did.
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<finalizer::Error<Error>>),
}

impl Error {
    /// A stable snake_case label for metrics and logs.
    pub fn category(&self) -> &'static str {
        match self {
            Error::ReconcilePanicked { .. } => "reconcile_panicked",
            Error::MissingObjectKey { .. } => "missing_object_key",
            Error::ListReplicaSets { .. } => "list_replica_sets",
            Error::GetService { .. } => "get_service",
            Error::ListAnalysisRuns { .. } => "list_analysis_runs",
            Error::ScaleReplicaSet { .. } => "scale_replica_set",
            Error::CreateReplicaSet { .. } => "create_replica_set",
            Error::DeleteReplicaSet { .. } => "delete_replica_set",
            Error::SetWeight { .. } => "set_weight",
            Error::GetTemplate { .. } => "get_template",
            Error::ResolveArg { .. } => "resolve_arg",
            Error::Instantiate { .. } => "instantiate",
            Error::PrepareAnalysis { source, .. } => source.category(),
            Error::CreateAnalysisRun { .. } => "create_analysis_run",
            Error::TerminateAnalysisRun { .. } => "terminate_analysis_run",
            Error::PatchService { .. } => "patch_service",
            Error::ReplaceStatus { .. } => "replace_status",
            Error::Finalizer(inner) => match inner.as_ref() {
                finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => {
                    e.category()
                }
                _ => "finalizer",
            },
        }
    }

    /// True when retrying cannot help until the spec (or a template, or the route) changes:
    /// arguments that do not resolve, templates that do not combine, a route without the
    /// backendRefs vigil needs.
    pub fn is_invalid_spec(&self) -> bool {
        match self {
            Error::ResolveArg { .. }
            | Error::Instantiate { .. }
            | Error::PrepareAnalysis { .. } => true,
            Error::SetWeight {
                source: TrafficError::ReadRoute { .. },
                ..
            } => true,
            Error::Finalizer(inner) => match inner.as_ref() {
                finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => {
                    e.is_invalid_spec()
                }
                _ => false,
            },
            _ => false,
        }
    }
}

fn not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.is_not_found())
}

fn already_exists(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.is_already_exists())
}

fn conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.is_conflict())
}

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

/// The router of a Rollout: an HTTPRoute, or the replica ratio.
enum Router {
    Gateway(Box<GatewayRoute>),
    Replicas(ReplicaRatio),
}

impl Router {
    fn of(rollout: &Rollout, client: &Client, namespace: &str) -> Router {
        let canary = &rollout.spec.strategy.canary;
        let gateway = canary
            .traffic_routing
            .as_ref()
            .and_then(|t| t.gateway_api.as_ref());
        match (gateway, &canary.stable_service, &canary.canary_service) {
            (Some(gateway), Some(stable), Some(canary)) => {
                Router::Gateway(Box::new(GatewayRoute::new(
                    Api::namespaced_with(client.clone(), namespace, &http_route_resource()),
                    &gateway.http_route,
                    stable,
                    canary,
                    FIELD_MANAGER,
                )))
            }
            _ => Router::Replicas(ReplicaRatio {
                configured: rollout.status.as_ref().map_or(0, |s| s.canary_weight),
            }),
        }
    }

    async fn set(&self, weight: i32) -> Result<(), TrafficError> {
        match self {
            Router::Gateway(route) => route.set_canary_weight(weight).await,
            Router::Replicas(ratio) => ratio.set_canary_weight(weight).await,
        }
    }

    async fn read(&self) -> Result<Option<i32>, TrafficError> {
        match self {
            Router::Gateway(route) => route.canary_weight().await,
            Router::Replicas(ratio) => ratio.canary_weight().await,
        }
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
    let api: Api<Rollout> = Api::namespaced(ctx.client.clone(), &namespace);
    if rollout.meta().deletion_timestamp.is_none()
        && !rollout.finalizers().iter().any(|f| f == FINALIZER)
    {
        return add_finalizer(&api, &rollout).await;
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
async fn add_finalizer(api: &Api<Rollout>, rollout: &Rollout) -> Result<Action, Error> {
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
        Ok(_) => Ok(Action::await_change()),
        // Changed meanwhile (a 409, or the test op failing with 422): look again.
        Err(kube::Error::Api(status)) if status.is_conflict() || status.is_invalid() => {
            Ok(Action::requeue(RETRY_CONFLICT))
        }
        Err(source) => Err(Error::Finalizer(Box::new(finalizer::Error::AddFinalizer(
            source,
        )))),
    }
}

async fn read(scope: &Scope<'_>, router: &Router) -> Result<Seen, Error> {
    let selector = ListParams::default().labels(&format!(
        "{ROLLOUT_LABEL}={}",
        rollout_label_value(&scope.name)
    ));
    let replica_sets = scope
        .api::<ReplicaSet>()
        .list(&selector)
        .await
        .map_err(|source| Error::ListReplicaSets {
            rollout: scope.name.clone(),
            source,
        })?
        .items;
    let canary = &scope.rollout.spec.strategy.canary;
    let services: Api<Service> = scope.api();
    let get_service = |name: Option<String>| {
        let services = services.clone();
        async move {
            let Some(name) = name else { return Ok(None) };
            services
                .get_opt(&name)
                .await
                .map_err(|source| Error::GetService {
                    service: name,
                    source,
                })
        }
    };
    let stable_service = get_service(canary.stable_service.clone()).await?;
    let canary_service = get_service(canary.canary_service.clone()).await?;
    // An unreadable router is "weight unknown": a setWeight step waits, an abort still acts.
    let router_canary_weight = router.read().await.unwrap_or_else(|error| {
        warn!(%error, "cannot read the router's weight");
        None
    });
    let analysis_runs = scope
        .api::<AnalysisRun>()
        .list(&selector)
        .await
        .map_err(|source| Error::ListAnalysisRuns {
            rollout: scope.name.clone(),
            source,
        })?
        .items;
    Ok(Seen {
        replica_sets,
        stable_service,
        canary_service,
        router_canary_weight,
        analysis_runs,
    })
}

async fn apply(rollout: &Rollout, ctx: &Context) -> Result<Action, Error> {
    let now = ctx.clock.now();
    let scope = Scope {
        rollout,
        name: rollout.name_any(),
        namespace: rollout.namespace().unwrap_or_default(),
        ctx,
    };
    let router = Router::of(rollout, &ctx.client, &scope.namespace);
    let seen = read(&scope, &router).await?;
    let mut observation = observation(rollout, &seen);
    let missing = ctx
        .templates
        .as_ref()
        .map(|index| missing_templates(rollout, &scope.namespace, index))
        .unwrap_or_default();
    // A template event may reach the controller before its cache has it: look again soon.
    let waiting_for_templates = !missing.is_empty();
    observation.spec_problems.extend(missing);
    let status = rollout.status.clone().unwrap_or_default();
    let decision = rollout::step(&rollout.spec, &status, &observation, now);
    let acted = match act(&scope, &router, &seen, &decision.effects).await {
        Ok(acted) => acted,
        Err(Error::PrepareAnalysis { problem, source }) => {
            // The analysis cannot start: hold with the problem in status (as any invalid
            // spec); a template change wakes this Rollout, and it looks again later anyway.
            warn!(path = %problem.path, error = %source, "analysis cannot start; holding");
            let mut observation = observation;
            observation.spec_problems.push(problem);
            let held = rollout::step(&rollout.spec, &status, &observation, now);
            // Only its events: holding moves nothing.
            let events: Vec<Effect> = held
                .effects
                .iter()
                .filter(|effect| matches!(effect, Effect::Event { .. }))
                .cloned()
                .collect();
            act(&scope, &router, &seen, &events).await?;
            if let Some(retry) = record(&scope, &status, &held).await? {
                return Ok(retry);
            }
            return Ok(Action::requeue(RECHECK_HELD_ANALYSIS));
        }
        Err(error) => return Err(error),
    };
    if let Some(retry) = record(&scope, &status, &decision).await? {
        return Ok(retry);
    }

    let mut after = decision.requeue_at.map(|at| until(now, at));
    if acted {
        after = Some(after.map_or(RECHECK_AFTER_ACTING, |a| a.min(RECHECK_AFTER_ACTING)));
    }
    if waiting_for_templates {
        after = Some(after.map_or(RECHECK_HELD_ANALYSIS, |a| a.min(RECHECK_HELD_ANALYSIS)));
    }
    let settled = matches!(
        decision.status.phase,
        Some(RolloutPhase::Healthy | RolloutPhase::Degraded | RolloutPhase::Aborted)
    );
    Ok(match after {
        Some(delay) => Action::requeue(delay),
        None if settled => Action::await_change(),
        None => Action::requeue(RESYNC),
    })
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
    let mut next = scope.rollout.clone();
    next.status = Some(decision.status.clone());
    // Keep the server's field ownership as it is; resourceVersion stays the observed one,
    // so a request the CLI wrote meanwhile makes this write conflict instead of vanish.
    next.metadata.managed_fields = None;
    match scope
        .api::<Rollout>()
        .replace_status(&scope.name, &post_params(), &next)
        .await
    {
        Ok(_) => {}
        Err(error) if conflict(&error) => {
            debug!("status changed since it was read; observing again");
            ctx.metrics.reconcile_failed("status_conflict");
            return Ok(Some(Action::requeue(RETRY_CONFLICT)));
        }
        Err(source) => {
            return Err(Error::ReplaceStatus {
                rollout: scope.name.clone(),
                source,
            });
        }
    }
    ctx.metrics.rollout_phase(&key, after.as_deref());
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

/// Executes `effects` in order, stopping at the first failure. Returns whether anything but
/// events was done.
async fn act(
    scope: &Scope<'_>,
    router: &Router,
    seen: &Seen,
    effects: &[Effect],
) -> Result<bool, Error> {
    let mut acted = false;
    for effect in effects {
        debug!(?effect, "acting");
        match effect {
            Effect::ScaleRevision { revision, replicas } => {
                scale(scope, seen, revision, *replicas).await?;
            }
            Effect::SetWeight { canary_weight } => {
                router
                    .set(*canary_weight)
                    .await
                    .map_err(|source| Error::SetWeight {
                        rollout: scope.name.clone(),
                        weight: *canary_weight,
                        source,
                    })?;
            }
            Effect::CreateAnalysisRun {
                name,
                kind,
                templates,
                args,
                stable_revision,
                canary_revision,
            } => {
                create_run(
                    scope,
                    name,
                    *kind,
                    templates,
                    args,
                    stable_revision,
                    canary_revision,
                )
                .await
                .map_err(|error| as_spec_problem(scope, *kind, error))?;
            }
            Effect::TerminateAnalysisRun { name } => {
                let patch = Patch::Merge(json!({"spec": {"terminate": true}}));
                match scope
                    .api::<AnalysisRun>()
                    .patch(name, &params(), &patch)
                    .await
                {
                    Ok(_) => {}
                    Err(error) if not_found(&error) => {}
                    Err(source) => {
                        return Err(Error::TerminateAnalysisRun {
                            run: name.clone(),
                            source,
                        });
                    }
                }
            }
            Effect::PointServices { stable, canary } => {
                let strategy = &scope.rollout.spec.strategy.canary;
                for (service, revision) in [
                    (&strategy.stable_service, stable),
                    (&strategy.canary_service, canary),
                ] {
                    if let (Some(service), Some(revision)) = (service, revision) {
                        point_service(scope, service, revision).await?;
                    }
                }
            }
            Effect::DeleteRevision { revision } => {
                let name = replica_set_name(&scope.name, revision);
                match scope
                    .api::<ReplicaSet>()
                    .delete(&name, &DeleteParams::background())
                    .await
                {
                    Ok(_) => {}
                    Err(error) if not_found(&error) => {}
                    Err(source) => {
                        return Err(Error::DeleteReplicaSet {
                            replica_set: name,
                            source,
                        });
                    }
                }
            }
            Effect::Event {
                type_,
                reason,
                message,
            } => {
                publish(scope, *type_, reason, message).await;
                continue;
            }
        }
        acted = true;
    }
    Ok(acted)
}

/// Events are a courtesy: one that cannot be written is logged, and the reconcile goes on
/// (failing here would repeat every effect for the sake of a message).
async fn publish(scope: &Scope<'_>, type_: EventType, reason: &str, message: &str) {
    let mut note = message.to_owned();
    if note.len() > 1000 {
        let mut cut = 1000;
        while !note.is_char_boundary(cut) {
            cut -= 1;
        }
        note.truncate(cut);
    }
    let event = KubeEvent {
        type_: match type_ {
            EventType::Normal => KubeEventType::Normal,
            EventType::Warning => KubeEventType::Warning,
        },
        reason: reason.to_owned(),
        note: Some(note),
        action: reason.to_owned(),
        secondary: None,
    };
    if let Err(error) = scope
        .ctx
        .recorder
        .publish(&event, &scope.rollout.object_ref(&()))
        .await
    {
        warn!(%error, reason, "cannot publish event");
    }
}

async fn scale(scope: &Scope<'_>, seen: &Seen, revision: &str, replicas: i32) -> Result<(), Error> {
    let name = replica_set_name(&scope.name, revision);
    let api: Api<ReplicaSet> = scope.api();
    let exists = seen
        .replica_sets
        .iter()
        .any(|rs| rs.metadata.name.as_deref() == Some(name.as_str()));
    if !exists {
        let replica_set = replica_set_for(scope.rollout, revision, replicas);
        match api.create(&post_params(), &replica_set).await {
            Ok(_) => {
                info!(replica_set = %name, replicas, "created ReplicaSet");
                return Ok(());
            }
            // Created by an earlier reconcile the cache has not shown yet: scale it.
            Err(error) if already_exists(&error) => {}
            Err(source) => {
                return Err(Error::CreateReplicaSet {
                    replica_set: name,
                    source,
                });
            }
        }
    }
    let patch = Patch::Merge(json!({"spec": {"replicas": replicas}}));
    api.patch(&name, &params(), &patch)
        .await
        .map_err(|source| Error::ScaleReplicaSet {
            replica_set: name.clone(),
            replicas,
            source,
        })?;
    info!(replica_set = %name, replicas, "scaled ReplicaSet");
    Ok(())
}

/// Patches only the `vigil.dev/revision` key of the Service's selector: a JSON merge patch
/// leaves the user's other selector keys alone.
async fn point_service(scope: &Scope<'_>, service: &str, revision: &str) -> Result<(), Error> {
    let patch = Patch::Merge(json!({
        "spec": {"selector": {super::context::REVISION_LABEL: revision}}
    }));
    scope
        .api::<Service>()
        .patch(service, &params(), &patch)
        .await
        .map_err(|source| Error::PatchService {
            service: service.to_owned(),
            revision: revision.to_owned(),
            source,
        })?;
    info!(service, revision, "pointed service");
    Ok(())
}

/// The value of an argument: as written, or read from a field of the Rollout. A
/// `secretKeyRef` stays a reference (the AnalysisRun controller reads it when measuring, so
/// its value is never stored); the Secret is checked now (it exists, opted in, has the key,
/// holds text) so a wrong reference holds the rollout with a reason before a run exists.
async fn resolve_arg(scope: &Scope<'_>, arg: &Argument) -> Result<Argument, Error> {
    let fail = |reason: String| Error::ResolveArg {
        arg: arg.name.clone(),
        reason,
    };
    let value = match (&arg.value, &arg.value_from) {
        (Some(value), _) => value.clone(),
        (None, Some(from)) => match (&from.secret_key_ref, &from.field_ref) {
            (Some(selector), None) => {
                let secret = scope
                    .api::<Secret>()
                    .get(&selector.name)
                    .await
                    .map_err(|e| fail(format!("get secret {}: {e}", selector.name)))?;
                let bytes = secret_value(&secret, &selector.name, &selector.key).map_err(fail)?;
                if std::str::from_utf8(&bytes).is_err() {
                    return Err(fail(format!(
                        "secret {} key {} is not UTF-8",
                        selector.name, selector.key
                    )));
                }
                return Ok(Argument {
                    name: arg.name.clone(),
                    value: None,
                    value_from: Some(crate::api::ArgumentValueFrom {
                        secret_key_ref: Some(selector.clone()),
                        field_ref: None,
                    }),
                });
            }
            (None, Some(field)) => field_ref_value(scope.rollout, &field.field_path)
                .ok_or_else(|| fail(format!("field {} is not set", field.field_path)))?,
            _ => {
                return Err(fail(
                    "set exactly one of secretKeyRef and fieldRef".to_owned(),
                ));
            }
        },
        (None, None) => return Err(fail("no value or valueFrom".to_owned())),
    };
    Ok(Argument {
        name: arg.name.clone(),
        value: Some(value),
        value_from: None,
    })
}

/// A failure to start an analysis that only a change of the spec or a template can fix,
/// worded for status; any other failure is returned as it is (and retried).
fn as_spec_problem(scope: &Scope<'_>, kind: AnalysisKind, error: Error) -> Error {
    let path = kind.path();
    let message = match &error {
        Error::GetTemplate { template, source } if not_found(source) => {
            match template.strip_prefix("cluster/") {
                Some(name) => format!("ClusterAnalysisTemplate {name:?} does not exist"),
                None => format!(
                    "AnalysisTemplate {template:?} does not exist in namespace {:?}",
                    scope.namespace
                ),
            }
        }
        Error::ResolveArg { .. } | Error::Instantiate { .. } => error.to_string(),
        _ => return error,
    };
    Error::PrepareAnalysis {
        problem: SpecProblem { path, message },
        source: Box::new(error),
    }
}

async fn create_run(
    scope: &Scope<'_>,
    name: &str,
    kind: AnalysisKind,
    templates: &[TemplateRef],
    args: &[Argument],
    stable: &str,
    canary: &str,
) -> Result<(), Error> {
    let mut specs = Vec::with_capacity(templates.len());
    for template in templates {
        let spec = if template.cluster_scope {
            Api::<ClusterAnalysisTemplate>::all(scope.ctx.client.clone())
                .get(&template.template_name)
                .await
                .map(|t| t.spec.template)
        } else {
            scope
                .api::<AnalysisTemplate>()
                .get(&template.template_name)
                .await
                .map(|t| t.spec)
        }
        .map_err(|source| Error::GetTemplate {
            template: if template.cluster_scope {
                format!("cluster/{}", template.template_name)
            } else {
                template.template_name.clone()
            },
            source,
        })?;
        specs.push((template.template_name.clone(), spec));
    }
    let mut given = builtin_args(&scope.name, &scope.namespace, stable, canary);
    for arg in args {
        given.push(resolve_arg(scope, arg).await?);
    }
    let spec =
        instantiate_with_secret_refs(&specs, &given).map_err(|source| Error::Instantiate {
            run: name.to_owned(),
            source,
        })?;
    let run = analysis_run_for(scope.rollout, name, kind, canary, spec);
    match scope
        .api::<AnalysisRun>()
        .create(&post_params(), &run)
        .await
    {
        Ok(_) => {
            info!(run = name, "created AnalysisRun");
            Ok(())
        }
        Err(error) if already_exists(&error) => Ok(()),
        Err(source) => Err(Error::CreateAnalysisRun {
            run: name.to_owned(),
            source,
        }),
    }
}

/// A Rollout being deleted mid-way: traffic back to the stable version (weight 0, both
/// Services on the stable revision). The HTTPRoute and Services belong to the user, so
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
    let status = rollout.status.clone().unwrap_or_default();
    let Some(stable) = status.stable_revision.as_deref() else {
        return Ok(Action::await_change());
    };
    let router = Router::of(rollout, &ctx.client, &scope.namespace);
    match router.set(0).await {
        Ok(()) => {}
        // The route is gone too (namespace deletion): nothing to return.
        Err(TrafficError::GetRoute { source, .. }) if not_found(&source) => {}
        Err(source) => {
            return Err(Error::SetWeight {
                rollout: scope.name.clone(),
                weight: 0,
                source,
            });
        }
    }
    let strategy = &rollout.spec.strategy.canary;
    for service in [&strategy.stable_service, &strategy.canary_service]
        .into_iter()
        .flatten()
    {
        match point_service(&scope, service, stable).await {
            Err(Error::PatchService { source, .. }) if not_found(&source) => {}
            other => other?,
        }
    }
    info!(
        stable,
        "traffic returned to the stable revision before deletion"
    );
    Ok(Action::await_change())
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

/// The Rollouts whose analyses use the template `name`: an AnalysisTemplate in `namespace`,
/// or, when `namespace` is `None`, a ClusterAnalysisTemplate.
fn rollouts_using(
    rollouts: &Store<Rollout>,
    namespace: Option<&str>,
    name: &str,
) -> Vec<ObjectRef<Rollout>> {
    rollouts
        .state()
        .iter()
        .filter(|rollout| namespace.is_none_or(|ns| rollout.namespace().as_deref() == Some(ns)))
        .filter(|rollout| uses_template(rollout, name, namespace.is_none()))
        .map(|rollout| ObjectRef::from_obj(rollout.as_ref()))
        .collect()
}

/// The template references of `rollout` (steps and background analysis) that name no
/// existing template, as spec problems at their fields.
fn missing_templates(
    rollout: &Rollout,
    namespace: &str,
    index: &TemplateIndex,
) -> Vec<SpecProblem> {
    rollout::declared_analyses(&rollout.spec)
        .flat_map(|analysis| {
            analysis.missing_templates(
                |t| index.contains(namespace, &t.template_name, t.cluster_scope),
                |t| {
                    if t.cluster_scope {
                        format!(
                            "ClusterAnalysisTemplate {:?} does not exist",
                            t.template_name
                        )
                    } else {
                        format!(
                            "AnalysisTemplate {:?} does not exist in namespace {namespace:?}",
                            t.template_name
                        )
                    }
                },
            )
        })
        .collect()
}

/// Whether a step or the background analysis of `rollout` refers to the template `name`.
fn uses_template(rollout: &Rollout, name: &str, cluster_scope: bool) -> bool {
    rollout::declared_analyses(&rollout.spec)
        .flat_map(|analysis| analysis.templates)
        .any(|t| t.template_name == name && t.cluster_scope == cluster_scope)
}

/// Runs the Rollout controller until `shutdown` resolves. Rollouts in `namespace` (all when
/// `None`); their ReplicaSets and AnalysisRuns (labelled `vigil.dev/rollout`) trigger
/// reconciles of their owner.
pub async fn run(
    ctx: Arc<Context>,
    watch: &super::WatchScope,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = &ctx.client;
    let rollouts: Api<Rollout> = watch.api(client);
    let replica_sets: Api<ReplicaSet> = watch.api(client);
    let runs: Api<AnalysisRun> = watch.api(client);
    let templates: Api<AnalysisTemplate> = watch.api(client);
    let cluster_templates: Api<ClusterAnalysisTemplate> = Api::all(client.clone());
    // Children carry their Rollout's labels, so a shard watches only its own (children
    // created before they did are still read, but do not wake their Rollout).
    let children = watcher::Config::default().labels(&match &watch.selector {
        Some(selector) => format!("{ROLLOUT_LABEL},{selector}"),
        None => ROLLOUT_LABEL.to_owned(),
    });
    let controller = Controller::new(rollouts, watch.watcher_config());
    let (by_template, by_cluster_template) = (controller.store(), controller.store());
    controller
        .owns(replica_sets, children.clone())
        .owns(runs, children)
        // A template created or fixed wakes the Rollouts whose analysis waits for it at once.
        .watches(templates, watcher::Config::default(), move |template| {
            rollouts_using(
                &by_template,
                template.namespace().as_deref(),
                &template.name_any(),
            )
        })
        .watches(
            cluster_templates,
            watcher::Config::default(),
            move |template| rollouts_using(&by_cluster_template, None, &template.name_any()),
        )
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
    use kube::runtime::reflector;
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

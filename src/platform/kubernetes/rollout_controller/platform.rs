//! The controller as a [`Platform`]: observe (read the Rollout's children, then the
//! dereference step), execute one effect, record the status.

#[allow(clippy::wildcard_imports)]
use super::*;
use crate::notify::{RolloutRef, Transition};
use crate::platform::kubernetes::cache::{referenced, references, rollouts_referencing};
use crate::platform::kubernetes::service_claims::{claim_problems, claimed_by_another};

/// Everything one reconcile reads about its Rollout, from the caches (the router's objects
/// too, when their kind is watched): no LIST, and a GET only for an object vigil wrote that
/// the cache has yet to show.
pub(super) async fn read(scope: &Scope<'_>, router: &Router) -> Result<Seen, Error> {
    let caches = &scope.ctx.caches;
    let replica_sets = (caches.replica_sets)
        .of(&scope.namespace, &scope.name)
        .into_iter()
        .map(ReplicaSet::from)
        .collect();
    let analysis_runs = caches.analysis_runs.of(&scope.namespace, &scope.name);
    let (stable_name, canary_name) = crate::rollout::service_names(&scope.rollout.spec);
    let stable_service = read_service(scope, stable_name).await?;
    let canary_service = read_service(scope, canary_name).await?;
    // A missing or malformed router object holds the rollout with its field named; any other
    // failure is "weight unknown": a setWeight step waits, an abort still acts.
    let hold = |error: TrafficError| {
        warn!(%error, "cannot read the router");
        error.hold_reason().map(|message| SpecProblem {
            path: router.object_path(&error),
            message,
        })
    };
    let (router_canary_weight, mut router_problem) = match router.canary_weight().await {
        Ok(weight) => (weight, None),
        Err(error) => (None, hold(error)),
    };
    let baseline_service = read_service(
        scope,
        crate::rollout::baseline::service(&scope.rollout.spec),
    )
    .await?;
    let router_baseline_weight = match router.baseline_weight().await {
        Ok(weight) => weight,
        Err(error) => {
            router_problem = router_problem.or_else(|| hold(error));
            None
        }
    };
    // The revisions the router's own selectors (Istio's subsets) select, read like the
    // Services' selectors.
    let router_selection = match router.selected_revisions().await {
        Ok(selection) => selection.map(|(stable, canary)| crate::rollout::ServiceSelection {
            stable,
            canary,
            baseline: None,
        }),
        Err(error) => {
            router_problem = router_problem.or_else(|| hold(error));
            None
        }
    };
    let router_managed_routes = managed_routes(scope, router).await;
    let workload = read_workload(scope).await?;
    let found = [
        stable_service.as_ref(),
        canary_service.as_ref(),
        baseline_service.as_ref(),
    ];
    let mut live_claims = Vec::new();
    for service in found.into_iter().flatten() {
        if let Some(claim) = live_claim(scope, service).await? {
            live_claims.push(claim);
        }
    }
    let service_claims = claim_problems(
        &scope.rollout.spec,
        &scope.name,
        found,
        |claimant, service| live_claims.contains(&(claimant.to_owned(), service.to_owned())),
    );
    Ok(Seen {
        service_claims,
        workload,
        replica_sets,
        stable_service,
        canary_service,
        baseline_service,
        router_canary_weight,
        router_baseline_weight,
        router_managed_routes,
        router_problem,
        router_selection,
        analysis_runs,
    })
}

/// `(claimant, service)` when another Rollout claims `service` and still names it: the
/// references index says so, or (a claimant the index does not hold: deleted, or another
/// shard's) the claimant read from the API server does.
pub(super) async fn live_claim(
    scope: &Scope<'_>,
    service: &Service,
) -> Result<Option<(String, String)>, Error> {
    let name = service.name_any();
    let Some(claimant) = claimed_by_another(service, &scope.name, |_| true) else {
        return Ok(None);
    };
    let key = referenced("Service", &scope.namespace, &name);
    let indexed = rollouts_referencing(
        &scope.ctx.caches.references,
        "Service",
        &scope.namespace,
        &name,
    )
    .iter()
    .any(|rollout| rollout.name == claimant);
    let names_it = indexed
        || scope
            .api::<Rollout>()
            .get_opt(&claimant)
            .await
            .map_err(|source| Error::GetClaimant {
                claimant: claimant.clone(),
                service: name.clone(),
                source,
            })?
            .is_some_and(|rollout| references(&rollout).contains(&key));
    Ok(names_it.then_some((claimant, name)))
}

/// The cached copy of a watched object, unless it predates vigil's last write of it (the
/// watch has yet to deliver the write): then `None`, and the caller reads the API server.
fn fresh<K: Resource + Clone>(
    scope: &Scope<'_>,
    kind: &str,
    name: &str,
    cached: Option<Arc<K>>,
) -> Option<Option<K>> {
    let key = WrittenVersions::key(kind, &scope.namespace, name);
    let version = cached
        .as_ref()
        .and_then(|o| o.meta().resource_version.clone());
    if scope.ctx.caches.written.is_stale(&key, version.as_deref()) {
        return None;
    }
    Some(cached.map(Arc::unwrap_or_clone))
}

/// The Service `name` (when the Rollout names one).
pub(super) async fn read_service(
    scope: &Scope<'_>,
    name: Option<&str>,
) -> Result<Option<Service>, Error> {
    let Some(name) = name else { return Ok(None) };
    let cached = scope.ctx.caches.services.get(&scope.namespace, name);
    if let Some(found) = fresh(scope, "Service", name, cached) {
        return Ok(found);
    }
    scope
        .api::<Service>()
        .get_opt(name)
        .await
        .map_err(|source| Error::GetService {
            service: name.to_owned(),
            source,
        })
}

/// The dereference of `spec.workloadRef`: the Deployment it names, when the reference is one
/// vigil reads (an `apps/v1` Deployment; anything else is the validator's to report).
async fn read_workload(scope: &Scope<'_>) -> Result<WorkloadSeen, Error> {
    let Some(workload) = &scope.rollout.spec.workload_ref else {
        return Ok(WorkloadSeen::NotReferenced);
    };
    if workload.api_version != "apps/v1" || workload.kind != "Deployment" {
        return Ok(WorkloadSeen::NotReferenced);
    }
    let cached = scope
        .ctx
        .caches
        .deployments
        .get(&scope.namespace, &workload.name);
    let found = match fresh(scope, "Deployment", &workload.name, cached) {
        Some(found) => found,
        None => scope
            .api::<Deployment>()
            .get_opt(&workload.name)
            .await
            .map_err(|source| Error::GetDeployment {
                deployment: workload.name.clone(),
                source,
            })?,
    };
    Ok(found.map_or(WorkloadSeen::Missing, |d| WorkloadSeen::Found(Box::new(d))))
}

/// The managed routes the router reports: read only when the Rollout lists
/// `managedRoutes` (none can be in place otherwise); `None` when they cannot be read.
async fn managed_routes(scope: &Scope<'_>, router: &Router) -> Option<ManagedRoutes> {
    let listed = scope
        .rollout
        .spec
        .strategy
        .canary
        .traffic_routing
        .as_ref()
        .is_some_and(|r| !r.managed_routes.is_empty());
    if !listed {
        return Some(ManagedRoutes::default());
    }
    router
        .managed_routes()
        .await
        .inspect_err(|error| warn!(%error, "cannot read the router's managed routes"))
        .ok()
}

/// One Rollout of the controller as a [`Platform`] for the shared [`reconcile_once`].
pub(super) struct KubeRollout<'a> {
    pub(super) scope: Scope<'a>,
    pub(super) router: Router,
    /// What was read, once per reconcile (a held analysis reconciles again without reading).
    pub(super) seen: Option<(Seen, Observation)>,
    /// The runs the dereference step prepared, by analysis: all `create_run` needs.
    pub(super) prepared: Vec<PreparedRun>,
    /// An analysis cannot start (a template event may reach the controller before its cache
    /// has it, and Secrets are not watched) or the router object is missing or malformed (it
    /// is not watched): look again soon.
    pub(super) blocked: bool,
    /// A run whose templates do not combine for the decision's revisions, found while
    /// acting: hold with it, emitting events only.
    pub(super) held: Option<SpecProblem>,
}

impl KubeRollout<'_> {
    /// Whose webhook answers these are: `namespace/name/uid` (a Rollout deleted and created
    /// again under its name never reads the answers its predecessor got).
    fn webhook_scope(&self) -> String {
        let uid = self
            .scope
            .rollout
            .metadata
            .uid
            .as_deref()
            .unwrap_or_default();
        format!("{}/{}/{uid}", self.scope.namespace, self.scope.name)
    }
}

impl Platform for KubeRollout<'_> {
    type Error = Error;
    /// `Some` when the status write conflicted: the action to take instead of going on.
    type Recorded = Option<Action>;

    async fn observe(&mut self) -> Result<Observed, Error> {
        let rollout = self.scope.rollout;
        if self.seen.is_none() {
            let seen = read(&self.scope, &self.router).await?;
            let mut observation = observation(rollout, &seen);
            let found = dereference(&self.scope, &observation).await?;
            // A held Rollout looks again now and then: what ends a claim (its Rollout
            // deleted, or naming another Service) need not touch this Rollout or its Services.
            self.blocked = !found.problems.is_empty()
                || seen.router_problem.is_some()
                || !seen.service_claims.is_empty();
            observation.spec_problems.extend(found.problems);
            self.prepared = found.prepared;
            self.seen = Some((seen, observation));
        }
        let mut observation = self
            .seen
            .as_ref()
            .map(|(_, o)| o.clone())
            .unwrap_or_default();
        observation.spec_problems.extend(self.held.clone());
        // Read at every observation (not cached with `seen`): answers arrive in the background.
        observation.webhook_answers = self.scope.ctx.webhooks.answers(&self.webhook_scope());
        Ok(Observed {
            spec: rollout.spec.clone(),
            status: rollout.status.clone().unwrap_or_default(),
            observation,
        })
    }

    async fn execute(&mut self, effect: &Effect) -> Result<bool, Error> {
        // Holding moves nothing: only the events of the held decision.
        if self.held.is_some() && !matches!(effect, Effect::Event { .. }) {
            return Ok(false);
        }
        let seen = self.seen.as_ref().map(|(seen, _)| seen);
        let empty = Seen::default();
        act(
            &self.scope,
            &self.router,
            seen.unwrap_or(&empty),
            &self.prepared,
            std::slice::from_ref(effect),
        )
        .await
    }

    fn call_webhooks(&mut self, calls: &[crate::rollout::webhooks::WebhookCall]) {
        let scope = self.webhook_scope();
        self.scope
            .ctx
            .webhooks
            .call(&scope, Some(&self.scope.namespace), calls);
    }

    async fn record(
        &mut self,
        observed: &RolloutStatus,
        decision: &Decision,
    ) -> Result<Option<Action>, Error> {
        record(&self.scope, observed, decision).await
    }

    fn stored(recorded: &Option<Action>) -> bool {
        recorded.is_none()
    }

    fn notify(&mut self, transitions: &[Transition]) {
        let rollout = RolloutRef {
            namespace: Some(&self.scope.namespace),
            name: &self.scope.name,
        };
        let annotations = self.scope.rollout.annotations();
        self.scope.ctx.notifier.notify(
            rollout,
            annotations.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            transitions,
        );
    }
}

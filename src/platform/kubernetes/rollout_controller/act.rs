//! Executing effects against the API: ReplicaSets, the router, Services, AnalysisRuns, Events.

#[allow(clippy::wildcard_imports)]
use super::*;
use crate::platform::kubernetes::revision_settings::{
    apply_to_new, metadata_patch, replica_set_patch, settings_of,
};
use crate::rollout::scaling::RevisionSettings;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;

/// Executes `effects` in order, stopping at the first failure. Returns whether anything but
/// events was done.
pub(super) async fn act(
    scope: &Scope<'_>,
    router: &Router,
    seen: &Seen,
    prepared: &[PreparedRun],
    effects: &[Effect],
) -> Result<bool, Error> {
    let mut acted = false;
    for effect in effects {
        debug!(?effect, "acting");
        match effect {
            Effect::ScaleRevision { revision, replicas } => {
                scale(scope, seen, revision, *replicas, None).await?;
            }
            Effect::SetRevisionSettings { revision, settings } => {
                set_revision_settings(scope, seen, revision, settings).await?;
            }
            Effect::SetWeight { canary_weight } => {
                router
                    .set_canary_weight(*canary_weight)
                    .await
                    .map_err(|source| Error::SetWeight {
                        rollout: scope.name.clone(),
                        weight: *canary_weight,
                        source: Box::new(source),
                    })?;
                report_put_back(scope, seen, *canary_weight);
            }
            // Only decided for a router that reports a baseline weight (the Gateway API's
            // three-way split, with `canary.baseline.service`).
            Effect::SetBaselineWeight { baseline_weight } => {
                router
                    .set_baseline_weight(*baseline_weight)
                    .await
                    .map_err(|source| Error::SetBaselineWeight {
                        rollout: scope.name.clone(),
                        weight: *baseline_weight,
                        source: Box::new(source),
                    })?;
            }
            Effect::PointBaselineService { revision } => {
                if let Some(service) = crate::rollout::baseline::service(&scope.rollout.spec) {
                    let observed = seen.baseline_service.as_ref();
                    point_service(scope, service, observed, revision, Claim::Keep).await?;
                }
            }
            Effect::SetHeaderRoute { route } => {
                let result = router.set_header_route(route).await;
                route_result(scope, &route.name, result)?;
            }
            Effect::RemoveHeaderRoute { name } => {
                let result = router.remove_header_route(name).await;
                route_result(scope, name, result)?;
            }
            Effect::SetMirrorRoute { route } => {
                let result = router.set_mirror_route(route).await;
                route_result(scope, &route.name, result)?;
            }
            Effect::RemoveMirrorRoute { name } => {
                let result = router.remove_mirror_route(name).await;
                route_result(scope, name, result)?;
            }
            Effect::CreateAnalysisRun {
                name,
                kind,
                stable_revision,
                canary_revision,
                ..
            } => {
                create_run(
                    scope,
                    prepared,
                    name,
                    *kind,
                    stable_revision,
                    canary_revision,
                )
                .await
                .map_err(|error| as_spec_problem(*kind, error))?;
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
            Effect::DeleteAnalysisRun { name } => delete_run(scope, seen, name).await?,
            Effect::PointServices { stable, canary } => {
                let (stable_service, canary_service) =
                    crate::rollout::service_names(&scope.rollout.spec);
                let observed = [&seen.stable_service, &seen.canary_service];
                let services = [(stable_service, stable), (canary_service, canary)];
                for ((service, revision), observed) in services.into_iter().zip(observed) {
                    if let (Some(service), Some(revision)) = (service, revision) {
                        let observed = observed.as_ref();
                        point_service(scope, service, observed, revision, Claim::Keep).await?;
                    }
                }
                router
                    .point_revisions(stable.as_deref(), canary.as_deref())
                    .await
                    .map_err(|source| Error::PointRouterRevisions {
                        rollout: scope.name.clone(),
                        source: Box::new(source),
                    })?;
            }
            Effect::DeleteRevision { revision } => {
                let name = replica_set_name(&scope.name, revision);
                // Only the ReplicaSet seen as this Rollout's, and only that very object (its
                // uid): a look-alike created under the name since is not deleted.
                let seen_set = seen
                    .replica_sets
                    .iter()
                    .find(|rs| rs.metadata.name.as_deref() == Some(name.as_str()));
                let Some(seen_set) = seen_set else {
                    continue;
                };
                ensure_controlled(scope, seen_set)?;
                let params = DeleteParams {
                    preconditions: Some(kube::api::Preconditions {
                        uid: seen_set.metadata.uid.clone(),
                        resource_version: None,
                    }),
                    ..DeleteParams::background()
                };
                match scope.api::<ReplicaSet>().delete(&name, &params).await {
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
            Effect::ScaleDownWorkload { observed, replicas } => {
                scale_down_workload(scope, seen, *observed, *replicas).await?;
            }
            Effect::Event {
                type_,
                reason,
                message,
            } => {
                publish(scope, *type_, reason, message);
                continue;
            }
        }
        acted = true;
    }
    Ok(acted)
}

/// Deletes the finished run `name` beyond the history limits: only the run seen as this
/// Rollout's, and only that very object (a `uid` precondition), so a run created under the
/// name since is not deleted. Absent (deleted meanwhile) counts as done.
async fn delete_run(scope: &Scope<'_>, seen: &Seen, name: &str) -> Result<(), Error> {
    let rollout_uid = scope.rollout.metadata.uid.as_deref();
    let seen_run = seen.analysis_runs.iter().find(|run| {
        run.metadata.name.as_deref() == Some(name)
            && rollout_uid.is_none_or(|uid| {
                crate::platform::kubernetes::observe::controlled_by(run.owner_references(), uid)
            })
    });
    let Some(seen_run) = seen_run else {
        return Ok(());
    };
    let params = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: seen_run.metadata.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::background()
    };
    match scope.api::<AnalysisRun>().delete(name, &params).await {
        Ok(_) => Ok(()),
        Err(error) if not_found(&error) => Ok(()),
        Err(source) => Err(Error::DeleteAnalysisRun {
            run: name.to_owned(),
            source,
        }),
    }
}

/// The outcome of changing the managed route `route`, as the controller's error.
pub(super) fn route_result(
    scope: &Scope<'_>,
    route: &str,
    result: Result<(), TrafficError>,
) -> Result<(), Error> {
    result.map_err(|source| Error::SetManagedRoute {
        rollout: scope.name.clone(),
        route: route.to_owned(),
        source: Box::new(source),
    })
}

/// A weight someone else set on the router was just put back: say so in a Warning event.
fn report_put_back(scope: &Scope<'_>, seen: &Seen, wanted: i32) {
    let last_set = scope
        .rollout
        .status
        .as_ref()
        .filter(|s| s.stable_revision.is_some())
        .map(|s| s.canary_weight);
    if let Some(note) = foreign_weight_edit(seen.router_canary_weight, last_set, wanted) {
        warn!(%note, "put back a foreign edit of the router's weight");
        publish(scope, EventType::Warning, "TrafficWeightRestored", &note);
    }
}

/// Events are a courtesy: queued for the background publisher, never awaited; one that
/// cannot be written is logged there, and the reconcile goes on (failing here would repeat
/// every effect for the sake of a message).
pub(super) fn publish(scope: &Scope<'_>, type_: EventType, reason: &str, message: &str) {
    let mut note = message.to_owned();
    if note.len() > 1000 {
        let mut cut = 1000;
        while !note.is_char_boundary(cut) {
            cut -= 1;
        }
        note.truncate(cut);
    }
    let event = EventNote {
        type_: match type_ {
            EventType::Normal => KubeEventType::Normal,
            EventType::Warning => KubeEventType::Warning,
        },
        reason: reason.to_owned(),
        action: reason.to_owned(),
        note,
    };
    scope.ctx.events.send(event, scope.rollout.object_ref(&()));
}

pub(super) async fn scale(
    scope: &Scope<'_>,
    seen: &Seen,
    revision: &str,
    replicas: i32,
    settings: Option<&RevisionSettings>,
) -> Result<(), Error> {
    let name = replica_set_name(&scope.name, revision);
    let api: Api<ReplicaSet> = scope.api();
    let found = seen
        .replica_sets
        .iter()
        .find(|rs| rs.metadata.name.as_deref() == Some(name.as_str()));
    if let Some(replica_set) = found {
        ensure_controlled(scope, replica_set)?;
    }
    let exists = found.is_some();
    if !exists && let Some(stable) = baseline_of(revision) {
        let replica_set = baseline_replica_set(scope, stable, revision, replicas).await?;
        return create_replica_set(scope, &api, &name, &replica_set, replicas).await;
    }
    if !exists {
        let workload = match &seen.workload {
            WorkloadSeen::Found(deployment) => deployment.spec.as_ref().map(|s| &s.template),
            WorkloadSeen::NotReferenced | WorkloadSeen::Missing => None,
        };
        let Some(template) = scope.rollout.spec.template.as_deref().or(workload) else {
            // Unreachable through `rollout::step` (no template is an invalid spec, which
            // creates nothing); creating nothing is the safe answer all the same.
            warn!(replica_set = %name, "no pod template to create the ReplicaSet from");
            return Ok(());
        };
        let mut replica_set = replica_set_for(scope.rollout, template, revision, replicas);
        if let Some(settings) = settings {
            apply_to_new(&mut replica_set, settings);
        }
        match api.create(&post_params(), &replica_set).await {
            Ok(_) => {
                info!(replica_set = %name, replicas, "created ReplicaSet");
                return Ok(());
            }
            // Created by an earlier reconcile the cache has not shown yet: scale it, once
            // it is known to be this Rollout's.
            Err(error) if already_exists(&error) => {
                ensure_created_by_us(scope, &api, &name).await?
            }
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

/// The ReplicaSet of the baseline `revision` of `stable`: the stable ReplicaSet's pod
/// template (read from the API: the cache trims templates), relabelled as the baseline.
async fn baseline_replica_set(
    scope: &Scope<'_>,
    stable: &str,
    revision: &str,
    replicas: i32,
) -> Result<ReplicaSet, Error> {
    let stable_name = replica_set_name(&scope.name, stable);
    let stable_set = scope
        .api::<ReplicaSet>()
        .get(&stable_name)
        .await
        .map_err(|source| Error::GetBaselineTemplate {
            replica_set: stable_name,
            baseline: revision.to_owned(),
            source,
        })?;
    // The name alone does not make it the stable's: a look-alike's template is never run.
    ensure_controlled(scope, &stable_set)?;
    let template = stable_set
        .spec
        .and_then(|spec| spec.template)
        .unwrap_or_default();
    Ok(baseline_replica_set_for(
        scope.rollout,
        template,
        revision,
        replicas,
    ))
}

/// A ReplicaSet this Rollout controls (its controller owner reference has the Rollout's
/// uid); any other is a [`Error::ForeignReplicaSet`], whatever its name and labels say.
fn ensure_controlled(scope: &Scope<'_>, replica_set: &ReplicaSet) -> Result<(), Error> {
    let controlled = scope.rollout.uid().is_none_or(|uid| {
        crate::platform::kubernetes::observe::controlled_by(replica_set.owner_references(), &uid)
    });
    if controlled {
        return Ok(());
    }
    warn!(replica_set = %replica_set.name_any(), "a ReplicaSet of another owner has a name vigil uses; left alone");
    Err(Error::ForeignReplicaSet {
        replica_set: replica_set.name_any(),
        rollout: scope.name.clone(),
    })
}

/// After "already exists": the ReplicaSet of that name is this Rollout's (an earlier
/// reconcile created it), or it is left alone.
async fn ensure_created_by_us(
    scope: &Scope<'_>,
    api: &Api<ReplicaSet>,
    name: &str,
) -> Result<(), Error> {
    let existing = api
        .get(name)
        .await
        .map_err(|source| Error::CheckReplicaSetOwner {
            replica_set: name.to_owned(),
            source,
        })?;
    ensure_controlled(scope, &existing)
}

/// Creates the ReplicaSet `name`, or scales it when an earlier reconcile created it already.
async fn create_replica_set(
    scope: &Scope<'_>,
    api: &Api<ReplicaSet>,
    name: &str,
    replica_set: &ReplicaSet,
    replicas: i32,
) -> Result<(), Error> {
    match api.create(&post_params(), replica_set).await {
        Ok(_) => {
            info!(replica_set = %name, replicas, "created ReplicaSet");
            return Ok(());
        }
        Err(error) if already_exists(&error) => ensure_created_by_us(scope, api, name).await?,
        Err(source) => {
            return Err(Error::CreateReplicaSet {
                replica_set: name.to_owned(),
                source,
            });
        }
    }
    let patch = Patch::Merge(json!({"spec": {"replicas": replicas}}));
    api.patch(name, &params(), &patch)
        .await
        .map_err(|source| Error::ScaleReplicaSet {
            replica_set: name.to_owned(),
            replicas,
            source,
        })?;
    Ok(())
}

/// Scales the `workloadRef` Deployment down (see [`scale_down_patch`]).
pub(super) async fn scale_down_workload(
    scope: &Scope<'_>,
    seen: &Seen,
    observed: i32,
    replicas: i32,
) -> Result<(), Error> {
    let WorkloadSeen::Found(deployment) = &seen.workload else {
        return Ok(());
    };
    let name = deployment.name_any();
    let patch = scale_down_patch(deployment, observed, replicas);
    let patched = scope
        .api::<Deployment>()
        .patch(&name, &params(), &Patch::<()>::Json(patch))
        .await
        .map_err(|source| Error::ScaleDownDeployment {
            deployment: name.clone(),
            observed,
            replicas,
            source,
        })?;
    scope.ctx.caches.written.wrote(
        WrittenVersions::key("Deployment", &scope.namespace, &name),
        patched.resource_version().as_deref(),
    );
    info!(deployment = %name, observed, replicas, "scaled down the workloadRef Deployment");
    Ok(())
}

/// Whether pointing a Service keeps this Rollout's claim on it or, at deletion, gives it up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Claim {
    Keep,
    GiveUp,
}

/// Patches only the `vigil.dev/revision` key of the Service's selector (a JSON merge patch
/// leaves the user's other selector keys alone) and the Service's
/// [`MANAGED_BY_ANNOTATION`]. `observed` is the Service as the reconcile read it: one
/// another Rollout manages is never patched (observe made that a spec problem; this guards
/// every path that points, the deletion's too), and claiming one nobody manages is guarded by
/// its resourceVersion, so of two Rollouts claiming at once one gets a conflict.
pub(super) async fn point_service(
    scope: &Scope<'_>,
    service: &str,
    observed: Option<&Service>,
    revision: &str,
    claim: Claim,
) -> Result<(), Error> {
    if let Some(observed) = observed
        && let Some((claimant, _)) = live_claim(scope, observed).await?
    {
        return Err(Error::ClaimService {
            service: service.to_owned(),
            claimant,
        });
    }
    let manager = match claim {
        Claim::Keep => json!(scope.name),
        Claim::GiveUp => serde_json::Value::Null,
    };
    let mut patch = json!({
        "metadata": {"annotations": {MANAGED_BY_ANNOTATION: manager}},
        "spec": {"selector": {REVISION_LABEL: revision}}
    });
    let claiming = observed.is_some_and(|o| {
        o.annotations().get(MANAGED_BY_ANNOTATION) != Some(&scope.name) && claim == Claim::Keep
    });
    if claiming && let Some(version) = observed.and_then(|o| o.resource_version()) {
        patch["metadata"]["resourceVersion"] = json!(version);
    }
    let patched = scope
        .api::<Service>()
        .patch(service, &params(), &Patch::Merge(patch))
        .await
        .map_err(|source| Error::PatchService {
            service: service.to_owned(),
            revision: revision.to_owned(),
            source,
        })?;
    scope.ctx.caches.written.wrote(
        WrittenVersions::key("Service", &scope.namespace, service),
        patched.resource_version().as_deref(),
    );
    info!(service, revision, "pointed service");
    Ok(())
}

/// Gives up this Rollout's claim on `service` (at deletion, for a Service whose selector vigil
/// leaves as it is: the baseline's); a Service that is gone or another Rollout's is left alone.
pub(super) async fn release_service(scope: &Scope<'_>, service: &str) -> Result<(), Error> {
    let Some(observed) = read_service(scope, Some(service)).await? else {
        return Ok(());
    };
    if observed.annotations().get(MANAGED_BY_ANNOTATION) != Some(&scope.name) {
        return Ok(());
    }
    let patch = json!({"metadata": {"annotations": {MANAGED_BY_ANNOTATION: null}}});
    match scope
        .api::<Service>()
        .patch(service, &params(), &Patch::Merge(patch))
        .await
    {
        Ok(patched) => {
            scope.ctx.caches.written.wrote(
                WrittenVersions::key("Service", &scope.namespace, service),
                patched.resource_version().as_deref(),
            );
            Ok(())
        }
        Err(source) if not_found(&source) => Ok(()),
        Err(source) => Err(Error::ReleaseService {
            service: service.to_owned(),
            source,
        }),
    }
}

/// A run whose templates and arguments do not combine for the decision's revisions (the
/// dereference step built it for the observed ones), worded for status; any other failure is
/// returned as it is (and retried).
pub(super) fn as_spec_problem(kind: AnalysisKind, error: Error) -> Error {
    let message = match &error {
        Error::Instantiate { .. } => error.to_string(),
        _ => return error,
    };
    let path = kind.path();
    Error::PrepareAnalysis {
        problem: SpecProblem { path, message },
        source: Box::new(error),
    }
}

/// Creates the run the dereference step prepared for `kind` (no template or Secret is read
/// here). Built again, purely, when the decision's revisions are not the observed ones.
pub(super) async fn create_run(
    scope: &Scope<'_>,
    prepared: &[PreparedRun],
    name: &str,
    kind: AnalysisKind,
    stable: &str,
    canary: &str,
) -> Result<(), Error> {
    let Some(run) = prepared.iter().find(|p| p.kind == kind) else {
        return Err(Error::FindPreparedRun {
            run: name.to_owned(),
        });
    };
    let spec = if run.stable == stable && run.canary == canary {
        run.spec.clone()
    } else {
        build(scope, &run.analysis, stable, canary).map_err(|source| Error::Instantiate {
            run: name.to_owned(),
            source,
        })?
    };
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

/// Puts `wanted` on the revision's ReplicaSet (from the settings it was seen with) and the
/// role metadata on its running pods; a ReplicaSet that does not exist yet is created with
/// them and 0 replicas (the `ScaleRevision` after this effect scales it).
async fn set_revision_settings(
    scope: &Scope<'_>,
    seen: &Seen,
    revision: &str,
    wanted: &RevisionSettings,
) -> Result<(), Error> {
    let name = replica_set_name(&scope.name, revision);
    let Some(replica_set) = seen
        .replica_sets
        .iter()
        .find(|rs| rs.metadata.name.as_deref() == Some(name.as_str()))
    else {
        return scale(scope, seen, revision, 0, Some(wanted)).await;
    };
    ensure_controlled(scope, replica_set)?;
    let previous = settings_of(replica_set);
    let patch = Patch::Merge(replica_set_patch(&previous, wanted));
    match scope
        .api::<ReplicaSet>()
        .patch(&name, &params(), &patch)
        .await
    {
        Ok(_) => {}
        Err(error) if not_found(&error) => return Ok(()),
        Err(source) => {
            return Err(Error::SetRevisionSettings {
                replica_set: name,
                source,
            });
        }
    }
    if previous.pod_metadata != wanted.pod_metadata {
        let owner = replica_set.metadata.uid.as_deref();
        label_running_pods(scope, revision, owner, &previous, wanted).await?;
    }
    info!(replica_set = %name, "set the revision's pod metadata and minReadySeconds");
    Ok(())
}

/// Whether `pod`'s controller is the object whose uid is `owner`.
fn controlled_by(pod: &Pod, owner: Option<&str>) -> bool {
    let Some(owner) = owner else { return false };
    pod.metadata
        .owner_references
        .iter()
        .flatten()
        .any(|reference| reference.controller == Some(true) && reference.uid == owner)
}

/// The role metadata on the revision's running pods (its template only reaches new ones):
/// those its ReplicaSet (`owner`, its uid) controls. The labels only find them; anyone who may
/// create pods in the namespace can put the same labels on a pod of their own, and vigil
/// patches no pod it does not run.
async fn label_running_pods(
    scope: &Scope<'_>,
    revision: &str,
    owner: Option<&str>,
    previous: &RevisionSettings,
    wanted: &RevisionSettings,
) -> Result<(), Error> {
    let pods = scope.api::<Pod>();
    let selector = format!(
        "{ROLLOUT_LABEL}={},{REVISION_LABEL}={revision}",
        rollout_label_value(&scope.name)
    );
    let list = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|source| Error::LabelPods {
            revision: revision.to_owned(),
            source,
        })?;
    let patch = Patch::Merge(json!({
        "metadata": metadata_patch(&previous.pod_metadata, &wanted.pod_metadata)
    }));
    for pod in list.items.iter().filter(|pod| controlled_by(pod, owner)) {
        let pod_name = pod.name_any();
        match pods.patch(&pod_name, &params(), &patch).await {
            Ok(_) => {}
            // A pod that went away meanwhile needs no labels.
            Err(error) if not_found(&error) => {}
            Err(source) => {
                return Err(Error::LabelPods {
                    revision: revision.to_owned(),
                    source,
                });
            }
        }
    }
    Ok(())
}

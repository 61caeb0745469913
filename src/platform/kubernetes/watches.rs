//! Which watches the controller opens, one per kind: the caches a Rollout reconcile reads
//! (see [`super::cache`]), with the AnalysisRuns shared by both controllers. Each reports
//! its health; each change wakes the Rollouts it concerns through one channel.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::reflector::ReflectHandle;
use kube::runtime::reflector::store::Writer;
use kube::runtime::watcher;
use tracing::{info, warn};

use super::WatchScope;
use super::cache::{
    CacheReporting, Caches, Index, spawn_children, spawn_referenced, trim_deployment, trim_dynamic,
    trim_replica_set, trim_run, trim_service,
};
use super::context::ROLLOUT_LABEL;
use crate::api::{AnalysisRun, Rollout};
use crate::traffic::gateway_api::http_route_resource;
use crate::traffic::istio::{destination_rule_resource, virtual_service_resource};
use crate::traffic::nginx::ingress_resource;
use crate::traffic::objects::WrittenVersions;
use crate::traffic::smi::traffic_split_resource;
use crate::traffic::traefik::traefik_service_resource;

/// How many AnalysisRun events may wait for the AnalysisRun controller before the shared
/// watch waits for it.
const SHARED_RUNS_BUFFER: usize = 1024;

/// The caches, and the AnalysisRun controller's share of the AnalysisRun watch.
pub struct Started {
    /// What Rollout reconciles read.
    pub caches: Caches,
    /// The AnalysisRuns' events, for the AnalysisRun controller (its store is
    /// `caches.analysis_runs`).
    pub runs: Option<ReflectHandle<AnalysisRun>>,
}

/// The router kinds vigil reads: the kind (as health and metrics name it), its resource,
/// and whether it is a custom resource (watched only when its CRD is installed).
fn router_kinds() -> [(&'static str, ApiResource, bool); 6] {
    [
        ("HTTPRoute", http_route_resource(), true),
        ("VirtualService", virtual_service_resource(), true),
        ("DestinationRule", destination_rule_resource(), true),
        ("TrafficSplit", traffic_split_resource(), true),
        ("TraefikService", traefik_service_resource(), true),
        ("Ingress", ingress_resource(), false),
    ]
}

/// Whether the CRD `name` is installed; a failure to tell counts as not (the kind is then
/// read from the API server, as without caches).
async fn installed(client: &Client, name: &str) -> bool {
    match Api::<CustomResourceDefinition>::all(client.clone())
        .get_opt(name)
        .await
    {
        Ok(found) => found.is_some(),
        Err(error) => {
            warn!(crd = name, %error, "cannot tell whether the CRD is installed; not watching it");
            false
        }
    }
}

/// Starts every cache watch. Router kinds are watched only when their CRD is installed (a
/// kind installed later is read from the API server until the controller restarts).
pub async fn start(
    client: &Client,
    scope: &WatchScope,
    references: &Index<Rollout>,
    reporting: &CacheReporting,
) -> Started {
    // Children carry their Rollout's labels, so a shard watches only its own.
    let children = watcher::Config::default().labels(&match &scope.selector {
        Some(selector) => format!("{ROLLOUT_LABEL},{selector}"),
        None => ROLLOUT_LABEL.to_owned(),
    });
    let replica_sets = spawn_children(
        scope.api::<ReplicaSet>(client),
        children,
        "ReplicaSet",
        trim_replica_set,
        Writer::default(),
        reporting,
    );
    // One AnalysisRun watch for both controllers: runs carry their Rollout's labels, so the
    // shard's selector finds them (the AnalysisRun controller also measures unlabelled ones).
    let runs_writer = Writer::new_shared(SHARED_RUNS_BUFFER, ());
    let runs = runs_writer.subscribe();
    let analysis_runs = spawn_children(
        scope.api::<AnalysisRun>(client),
        scope.watcher_config(),
        "AnalysisRun",
        trim_run,
        runs_writer,
        reporting,
    );
    let services = spawn_referenced(
        scope.api::<Service>(client),
        "Service",
        trim_service,
        Writer::default(),
        references,
        reporting,
    );
    let deployments = spawn_referenced(
        scope.api::<Deployment>(client),
        "Deployment",
        trim_deployment,
        Writer::default(),
        references,
        reporting,
    );
    let mut routers = BTreeMap::new();
    for (kind, resource, custom) in router_kinds() {
        let crd = format!("{}.{}", resource.plural, resource.group);
        if custom && !installed(client, &crd).await {
            info!(kind, "CRD not installed; not watching the kind");
            continue;
        }
        let api: Api<DynamicObject> = match &scope.namespace {
            Some(namespace) => Api::namespaced_with(client.clone(), namespace, &resource),
            None => Api::all_with(client.clone(), &resource),
        };
        let watched = spawn_referenced(
            api,
            kind,
            trim_dynamic,
            Writer::new(resource.clone()),
            references,
            reporting,
        );
        routers.insert(kind.to_owned(), (resource, watched));
    }
    Started {
        caches: Caches {
            replica_sets,
            analysis_runs,
            services,
            deployments,
            routers,
            written: WrittenVersions::default(),
        },
        runs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_router_kind_is_named_as_its_resource() {
        for (kind, resource, _) in router_kinds() {
            assert_eq!(kind, resource.kind);
        }
    }
}

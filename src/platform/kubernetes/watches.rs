//! Which watches the controller opens, one per kind: the caches a Rollout reconcile reads
//! (see [`super::cache`]), with the AnalysisRuns shared by both controllers. Each reports
//! its health; each change wakes the Rollouts it concerns through one channel.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::Client;
use kube::runtime::watcher;

use super::WatchScope;
use super::cache::{
    CacheReporting, Caches, Index, RouterCaches, RunTriggers, lean_watch_events, spawn_children,
    spawn_referenced, trim_deployment, trim_run, trim_service, watch_events,
};
use super::cached_replica_set::{self, CachedReplicaSet};
use super::context::ROLLOUT_LABEL;
use super::lean_meta::Lean;
use super::router_crds::{self, RouterCrds, RouterKind, start_router_cache};
use crate::api::{AnalysisRun, Rollout};
use crate::traffic::gateway_api::http_route_resource;
use crate::traffic::istio::{destination_rule_resource, virtual_service_resource};
use crate::traffic::nginx::ingress_resource;
use crate::traffic::objects::WrittenVersions;
use crate::traffic::smi::traffic_split_resource;
use crate::traffic::traefik::traefik_service_resource;

/// The caches, and the AnalysisRun controller's share of the AnalysisRun watch.
pub struct Started {
    /// What Rollout reconciles read.
    pub caches: Caches,
    /// The AnalysisRuns to reconcile, for the AnalysisRun controller (its store is
    /// `caches.analysis_runs`): the one AnalysisRun watch feeds both controllers.
    pub runs: RunTriggers,
}

/// The router kinds vigil reads that are custom resources (watched while their CRD is
/// installed).
fn custom_router_kinds() -> Vec<RouterKind> {
    [
        ("HTTPRoute", http_route_resource()),
        ("VirtualService", virtual_service_resource()),
        ("DestinationRule", destination_rule_resource()),
        ("TrafficSplit", traffic_split_resource()),
        ("TraefikService", traefik_service_resource()),
    ]
    .into_iter()
    .map(|(kind, resource)| RouterKind { kind, resource })
    .collect()
}

/// Starts every cache watch. Router kinds that are custom resources are watched while their
/// CRD is installed (see [`router_crds`]).
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
        watch_events(scope.api::<CachedReplicaSet>(client), children),
        "ReplicaSet",
        cached_replica_set::trim,
        None,
        reporting,
    );
    // One AnalysisRun watch for both controllers: runs carry their Rollout's labels, so the
    // shard's selector finds them (the AnalysisRun controller also measures unlabelled ones).
    let (trigger, runs) = futures::channel::mpsc::unbounded();
    let analysis_runs = spawn_children(
        lean_watch_events(
            scope.api::<Lean<AnalysisRun>>(client),
            scope.watcher_config(),
        ),
        "AnalysisRun",
        trim_run,
        Some(trigger),
        reporting,
    );
    let (services, _) = spawn_referenced(
        scope.api::<Service>(client),
        "Service",
        trim_service,
        (),
        references,
        reporting,
    );
    let (deployments, _) = spawn_referenced(
        scope.api::<Deployment>(client),
        "Deployment",
        trim_deployment,
        (),
        references,
        reporting,
    );
    let routers = RouterCaches::default();
    // Ingress is built in: always watched.
    start_router_cache(
        client,
        scope,
        "Ingress",
        &ingress_resource(),
        references,
        reporting,
        &routers,
    );
    router_crds::follow(RouterCrds {
        client: client.clone(),
        scope: scope.clone(),
        kinds: custom_router_kinds(),
        references: references.clone(),
        reporting: reporting.clone(),
        routers: routers.clone(),
    })
    .await;
    Started {
        caches: Caches {
            replica_sets,
            analysis_runs,
            services,
            deployments,
            routers,
            written: WrittenVersions::default(),
            references: references.clone(),
        },
        runs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_router_kind_is_named_as_its_resource() {
        for RouterKind { kind, resource } in custom_router_kinds() {
            assert_eq!(kind, resource.kind);
        }
    }
}

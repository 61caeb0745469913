//! Which router kinds are watched: those whose CRD is installed. One metadata-only watch of
//! the CRDs (names only, never their schemas) starts a kind's cache when its CRD appears,
//! also after the controller started, and stops it when the CRD is removed, so a kind
//! installed later is read from memory like the others instead of by a GET per reconcile.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, PartialObjectMeta};
use kube::runtime::{WatchStreamExt as _, watcher};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::WatchScope;
use super::cache::{CacheReporting, Index, RouterCaches, spawn_referenced, trim_dynamic};
use super::watch_health::observed;
use crate::api::Rollout;

/// How long startup waits for the first list of the CRDs before the controllers start (the
/// kinds not known by then are read from the API server until their CRD shows up).
const FIRST_LIST: Duration = Duration::from_secs(30);

/// The name health, metrics and logs give the CRD watch.
const CRD_WATCH: &str = "CustomResourceDefinition";

/// A router kind that is a custom resource: its kind name and resource.
#[derive(Clone)]
pub struct RouterKind {
    /// The kind, as health and metrics name it.
    pub kind: &'static str,
    /// Its resource.
    pub resource: ApiResource,
}

impl RouterKind {
    /// The name of the kind's CRD (`<plural>.<group>`).
    pub fn crd_name(&self) -> String {
        format!("{}.{}", self.resource.plural, self.resource.group)
    }
}

/// Starts the cache of `kind` into `routers`; returns its task.
pub fn start_router_cache(
    client: &Client,
    scope: &WatchScope,
    kind: &'static str,
    resource: &ApiResource,
    references: &Index<Rollout>,
    reporting: &CacheReporting,
    routers: &RouterCaches,
) -> JoinHandle<()> {
    let api: Api<DynamicObject> = match &scope.namespace {
        Some(namespace) => Api::namespaced_with(client.clone(), namespace, resource),
        None => Api::all_with(client.clone(), resource),
    };
    let (watched, task) = spawn_referenced(
        api,
        kind,
        trim_dynamic,
        resource.clone(),
        references,
        reporting,
    );
    routers.insert(resource, watched);
    task
}

/// What the CRD watch needs to start and stop router caches.
pub struct RouterCrds {
    /// The client the caches watch with.
    pub client: Client,
    /// Their scope.
    pub scope: WatchScope,
    /// The custom router kinds vigil knows.
    pub kinds: Vec<RouterKind>,
    /// The reference index waking Rollouts.
    pub references: Index<Rollout>,
    /// Where the caches report.
    pub reporting: CacheReporting,
    /// Where the caches go.
    pub routers: RouterCaches,
}

/// Follows the CRDs on its own task, keeping `routers` to the installed kinds; returns once
/// the first list is in (or after [`FIRST_LIST`]).
pub async fn follow(crds: RouterCrds) {
    let (listed, first_list) = oneshot::channel();
    tokio::spawn(run(crds, listed));
    if tokio::time::timeout(FIRST_LIST, first_list).await.is_err() {
        warn!("the CRDs were not listed in time; router kinds are watched once they are");
    }
}

/// The kinds whose caches run, with their tasks.
struct Running {
    crds: RouterCrds,
    tasks: BTreeMap<&'static str, JoinHandle<()>>,
}

impl Running {
    fn kind_of(&self, crd: &str) -> Option<RouterKind> {
        self.crds
            .kinds
            .iter()
            .find(|k| k.crd_name() == crd)
            .cloned()
    }

    fn start(&mut self, crd: &str) {
        let Some(RouterKind { kind, resource }) = self.kind_of(crd) else {
            return;
        };
        if self.tasks.contains_key(kind) {
            return;
        }
        info!(kind, "CRD installed; watching the kind");
        let c = &self.crds;
        let task = start_router_cache(
            &c.client,
            &c.scope,
            kind,
            &resource,
            &c.references,
            &c.reporting,
            &c.routers,
        );
        self.tasks.insert(kind, task);
    }

    async fn stop(&mut self, kind: &'static str) {
        let Some(task) = self.tasks.remove(kind) else {
            return;
        };
        info!(kind, "CRD removed; no longer watching the kind");
        self.crds.routers.remove(kind);
        task.abort();
        // Only once the task is gone can it no longer mark the watch failing.
        let _ = task.await;
        self.crds.reporting.health.forget(kind);
    }

    /// Stops every kind whose CRD is not in `installed`.
    async fn keep_only(&mut self, installed: &BTreeSet<String>) {
        let gone: Vec<&'static str> = self
            .crds
            .kinds
            .iter()
            .filter(|k| !installed.contains(&k.crd_name()))
            .map(|k| k.kind)
            .collect();
        for kind in gone {
            self.stop(kind).await;
        }
    }
}

async fn run(crds: RouterCrds, listed: oneshot::Sender<()>) {
    let api = Api::<PartialObjectMeta<CustomResourceDefinition>>::all(crds.client.clone());
    let events = watcher(api, watcher::Config::default()).default_backoff();
    let events = observed(
        events,
        CRD_WATCH,
        crds.reporting.health.clone(),
        crds.reporting.metrics.clone(),
    );
    futures::pin_mut!(events);
    let mut running = Running {
        crds,
        tasks: BTreeMap::new(),
    };
    let mut listed = Some(listed);
    let mut listing: Option<BTreeSet<String>> = None;
    while let Some(event) = events.next().await {
        let Ok(event) = event else {
            continue;
        };
        match event {
            watcher::Event::Init => listing = Some(BTreeSet::new()),
            watcher::Event::InitApply(crd) => {
                let name = crd.metadata.name.unwrap_or_default();
                running.start(&name);
                listing.get_or_insert_default().insert(name);
            }
            watcher::Event::InitDone => {
                running.keep_only(&listing.take().unwrap_or_default()).await;
                if let Some(listed) = listed.take() {
                    let _ = listed.send(());
                }
            }
            watcher::Event::Apply(crd) => {
                running.start(crd.metadata.name.as_deref().unwrap_or_default());
            }
            watcher::Event::Delete(crd) => {
                let name = crd.metadata.name.unwrap_or_default();
                if let Some(kind) = running.kind_of(&name) {
                    running.stop(kind.kind).await;
                }
            }
        }
    }
}

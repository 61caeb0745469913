//! The Rollout controller's read path: reflector stores of every kind a reconcile reads
//! (ReplicaSets, AnalysisRuns, Services, Deployments, router objects), each trimmed to what
//! vigil reads, indexed by what finds them (the rollout label; the names Rollouts
//! reference), and each waking the Rollouts its changes concern. A reconcile reads memory,
//! never the API server; a restart lists each kind once.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::reflector::{ObjectRef, Store, store::Writer};
use kube::runtime::{WatchStreamExt as _, watcher};

use kube::{Resource, ResourceExt};
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinHandle;

use super::cached_replica_set::CachedReplicaSet;
use super::context::{MANAGED_BY_ANNOTATION, ROLLOUT_LABEL, rollout_label_value};
use super::lean_meta::{Lean, SpecAndStatus, assembled};
use super::relist::{self, RelistDiff};
use super::watch_health::{WatchHealth, observed};
use crate::api::{AnalysisRun, Rollout};
use crate::metrics::Metrics;
use crate::traffic::objects::{ObjectCache, WrittenVersions};

/// The annotation `kubectl apply` leaves: a copy of the whole object, never read by vigil.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// `(namespace, name)` of a cached object.
type Key = (String, String);

/// A secondary index of a store: the objects under each key `keys_of` gives them. Kept in
/// step with the watch events (a relist rebuilds it, as the store itself), and applied
/// before the store so whatever a lookup finds is either in the store or on its way.
#[derive(Clone)]
pub struct Index<K> {
    state: Arc<RwLock<IndexState>>,
    keys_of: fn(&K) -> Vec<String>,
}

#[derive(Default)]
struct IndexState {
    /// A whole list has been applied: an object missing from the index is missing.
    listed: bool,
    /// Sorted, without repeats. A `Vec`: most keys file one or two objects, for which a
    /// `BTreeSet` would allocate a whole node (~0.5 KiB) each.
    by_key: HashMap<String, Vec<Key>>,
    keys: HashMap<Key, Vec<String>>,
    /// The keys of a list in progress, swapped in when it ends.
    listing: Option<HashMap<Key, Vec<String>>>,
}

impl IndexState {
    /// Unfiles `object`; returns the keys it was filed under.
    fn remove(&mut self, object: &Key) -> Vec<String> {
        let keys = self.keys.remove(object).unwrap_or_default();
        for key in &keys {
            if let Some(objects) = self.by_key.get_mut(key) {
                if let Ok(at) = objects.binary_search(object) {
                    objects.remove(at);
                }
                if objects.is_empty() {
                    self.by_key.remove(key);
                }
            }
        }
        keys
    }

    /// Files `object` under `keys`; returns the keys it is no longer filed under.
    fn insert(&mut self, object: Key, keys: Vec<String>) -> Vec<String> {
        let mut dropped = self.remove(&object);
        dropped.retain(|key| !keys.contains(key));
        if keys.is_empty() {
            return dropped;
        }
        for key in &keys {
            let objects = self.by_key.entry(key.clone()).or_default();
            if let Err(at) = objects.binary_search(&object) {
                objects.insert(at, object.clone());
            }
        }
        self.keys.insert(object, keys);
        dropped
    }
}

fn key_of<K: Resource>(object: &K) -> Key {
    (
        object.meta().namespace.clone().unwrap_or_default(),
        object.meta().name.clone().unwrap_or_default(),
    )
}

impl<K: Resource> Index<K> {
    /// An empty index filing each object under `keys_of(object)`.
    pub fn new(keys_of: fn(&K) -> Vec<String>) -> Index<K> {
        Index {
            state: Arc::default(),
            keys_of,
        }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, IndexState> {
        // A poisoned index is still a valid index: each update is whole before it is seen.
        self.state
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Applies one watch event; returns the keys some object is no longer filed under (what
    /// a changed or deleted object stopped naming, or, after a relist, what the objects gone
    /// in between named).
    pub fn apply(&self, event: &watcher::Event<K>) -> Vec<String> {
        let mut state = self.write();
        match event {
            watcher::Event::Apply(object) => state.insert(key_of(object), (self.keys_of)(object)),
            watcher::Event::Delete(object) => state.remove(&key_of(object)),
            watcher::Event::Init => {
                state.listing = Some(HashMap::new());
                Vec::new()
            }
            watcher::Event::InitApply(object) => {
                let keys = (self.keys_of)(object);
                if !keys.is_empty() {
                    state
                        .listing
                        .get_or_insert_default()
                        .insert(key_of(object), keys);
                }
                Vec::new()
            }
            watcher::Event::InitDone => {
                let listed = state.listing.take().unwrap_or_default();
                let before: Vec<String> = state.by_key.keys().cloned().collect();
                *state = IndexState {
                    listed: true,
                    ..IndexState::default()
                };
                for (object, keys) in listed {
                    state.insert(object, keys);
                }
                before
                    .into_iter()
                    .filter(|key| !state.by_key.contains_key(key))
                    .collect()
            }
        }
    }

    /// Whether a whole list has been applied (before, a lookup's answer may be missing
    /// objects).
    pub fn listed(&self) -> bool {
        self.state
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .listed
    }

    /// The objects filed under `key`, as `(namespace, name)`.
    pub fn lookup(&self, key: &str) -> Vec<Key> {
        self.state
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .by_key
            .get(key)
            .cloned()
            .unwrap_or_default()
    }
}

/// The store of one watched kind, and whether its watch has listed at least once (before,
/// an empty store would make every object look missing).
#[derive(Clone)]
pub struct Watched<K: Resource + 'static>
where
    K::DynamicType: std::hash::Hash + Eq + Clone,
{
    /// The objects.
    pub store: Store<K>,
    /// The kind, as the health and metrics name it.
    pub resource: &'static str,
    synced: Arc<AtomicBool>,
}

impl<K> Watched<K>
where
    K: Resource + Clone + 'static,
    K::DynamicType: std::hash::Hash + Eq + Clone + Default,
{
    /// A store that never syncs: what a controller without this watch holds.
    pub fn unwatched(resource: &'static str) -> Watched<K> {
        Watched {
            store: Writer::default().as_reader(),
            resource,
            synced: Arc::default(),
        }
    }

    /// A synced store holding exactly `objects` (for tests and the local tools).
    pub fn holding(resource: &'static str, objects: impl IntoIterator<Item = K>) -> Watched<K> {
        let mut writer = Writer::default();
        writer.apply_watcher_event(&watcher::Event::Init);
        for object in objects {
            writer.apply_watcher_event(&watcher::Event::InitApply(object));
        }
        writer.apply_watcher_event(&watcher::Event::InitDone);
        Watched {
            store: writer.as_reader(),
            resource,
            synced: Arc::new(AtomicBool::new(true)),
        }
    }

    /// The object `name` in `namespace`.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<K>> {
        self.store.get(&ObjectRef::new(name).within(namespace))
    }
}

impl<K> Watched<K>
where
    K: Resource + 'static,
    K::DynamicType: std::hash::Hash + Eq + Clone,
{
    /// Whether the watch has listed at least once.
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }
}

/// A watched kind whose objects belong to Rollouts (they carry [`ROLLOUT_LABEL`]): found by
/// the label, not by a scan.
#[derive(Clone)]
pub struct Children<K: Resource + 'static>
where
    K::DynamicType: std::hash::Hash + Eq + Clone,
{
    /// The objects.
    pub watched: Watched<K>,
    /// By `namespace/label value`.
    pub index: Index<K>,
}

/// The index key of the children of the Rollout `name` in `namespace`.
fn children_key(namespace: &str, label_value: &str) -> String {
    format!("{namespace}/{label_value}")
}

fn by_rollout_label<K: Resource>(object: &K) -> Vec<String> {
    object
        .labels()
        .get(ROLLOUT_LABEL)
        .map(|value| {
            vec![children_key(
                object.meta().namespace.as_deref().unwrap_or_default(),
                value,
            )]
        })
        .unwrap_or_default()
}

impl<K> Children<K>
where
    K: Resource + Clone + 'static,
    K::DynamicType: std::hash::Hash + Eq + Clone + Default,
{
    /// Children of a store that never syncs.
    pub fn unwatched(resource: &'static str) -> Children<K> {
        Children {
            watched: Watched::unwatched(resource),
            index: Index::new(by_rollout_label),
        }
    }

    /// Synced children holding exactly `objects`.
    pub fn holding(resource: &'static str, objects: Vec<K>) -> Children<K> {
        let index = Index::new(by_rollout_label);
        index.apply(&watcher::Event::Init);
        for object in &objects {
            index.apply(&watcher::Event::InitApply(object.clone()));
        }
        index.apply(&watcher::Event::InitDone);
        Children {
            watched: Watched::holding(resource, objects),
            index,
        }
    }

    /// The objects labelled as children of the Rollout `rollout` in `namespace`, by name.
    pub fn of(&self, namespace: &str, rollout: &str) -> Vec<K> {
        let mut found: Vec<K> = self
            .index
            .lookup(&children_key(namespace, &rollout_label_value(rollout)))
            .into_iter()
            .filter_map(|(namespace, name)| self.watched.get(&namespace, &name))
            .map(Arc::unwrap_or_clone)
            .collect();
        found.sort_by(|a, b| a.meta().name.cmp(&b.meta().name));
        found
    }
}

/// The router kinds watched, by kind. A kind joins when its CRD is installed, also after
/// the controller started, and leaves when the CRD is removed.
#[derive(Clone, Default)]
pub struct RouterCaches(Arc<RwLock<RouterMap>>);

type RouterMap = BTreeMap<String, (ApiResource, Watched<DynamicObject>)>;

impl RouterCaches {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, RouterMap> {
        // A poisoned map is still a valid map: each insert or remove is whole.
        self.0
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, RouterMap> {
        self.0
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Caches the objects of `resource`'s kind in `watched`.
    pub fn insert(&self, resource: &ApiResource, watched: Watched<DynamicObject>) {
        self.write()
            .insert(resource.kind.clone(), (resource.clone(), watched));
    }

    /// Stops caching `kind`.
    pub fn remove(&self, kind: &str) {
        self.write().remove(kind);
    }

    /// Whether `kind` is cached.
    pub fn contains_key(&self, kind: &str) -> bool {
        self.read().contains_key(kind)
    }

    /// The cache of `kind`, if it is watched.
    pub fn get(&self, kind: &str) -> Option<(ApiResource, Watched<DynamicObject>)> {
        self.read().get(kind).cloned()
    }

    /// Every cached kind.
    pub fn all(&self) -> Vec<(ApiResource, Watched<DynamicObject>)> {
        self.read().values().cloned().collect()
    }
}

/// What a reconcile reads, from memory.
#[derive(Clone)]
pub struct Caches {
    /// ReplicaSets labelled with a Rollout, as the fields vigil reads.
    pub replica_sets: Children<CachedReplicaSet>,
    /// AnalysisRuns labelled with a Rollout (the AnalysisRun controller's store too).
    pub analysis_runs: Children<AnalysisRun>,
    /// Services (the stable and canary ones are looked up by name).
    pub services: Watched<Service>,
    /// Deployments (`spec.workloadRef`).
    pub deployments: Watched<Deployment>,
    /// Router objects by kind, for the kinds installed in the cluster (also after start); a
    /// kind not here is read from the API server.
    pub routers: RouterCaches,
    /// vigil's writes the caches have yet to show.
    pub written: WrittenVersions,
    /// The Rollouts by the objects they name (filled by the Rollout watch): whether the
    /// Rollout a Service's claim names still names that Service.
    pub references: Index<Rollout>,
}

impl Default for Caches {
    /// Caches that never sync: a reconcile waits for them.
    fn default() -> Caches {
        Caches {
            replica_sets: Children::unwatched("ReplicaSet"),
            analysis_runs: Children::unwatched("AnalysisRun"),
            services: Watched::unwatched("Service"),
            deployments: Watched::unwatched("Deployment"),
            routers: RouterCaches::default(),
            written: WrittenVersions::default(),
            references: Index::new(references),
        }
    }
}

impl Caches {
    /// Synced caches holding exactly these objects, trimmed as the watches trim them (router
    /// kinds unwatched: read from the API server).
    pub fn holding(
        replica_sets: Vec<ReplicaSet>,
        analysis_runs: Vec<AnalysisRun>,
        services: Vec<Service>,
        deployments: Vec<Deployment>,
    ) -> Caches {
        Caches {
            replica_sets: Children::holding(
                "ReplicaSet",
                replica_sets
                    .into_iter()
                    .map(CachedReplicaSet::from)
                    .collect(),
            ),
            analysis_runs: Children::holding("AnalysisRun", analysis_runs),
            services: Watched::holding("Service", services),
            deployments: Watched::holding("Deployment", deployments),
            routers: RouterCaches::default(),
            written: WrittenVersions::default(),
            references: listed_index(),
        }
    }

    /// Also caches the router objects `objects` of `resource`'s kind.
    pub fn with_router_objects(
        self,
        resource: &ApiResource,
        objects: Vec<DynamicObject>,
    ) -> Caches {
        let mut writer = Writer::new(resource.clone());
        writer.apply_watcher_event(&watcher::Event::Init);
        for object in objects {
            writer.apply_watcher_event(&watcher::Event::InitApply(object));
        }
        writer.apply_watcher_event(&watcher::Event::InitDone);
        let watched = Watched {
            store: writer.as_reader(),
            resource: "router",
            synced: Arc::new(AtomicBool::new(true)),
        };
        self.routers.insert(resource, watched);
        self
    }

    /// The first cache that has not listed yet, if any.
    pub fn unsynced(&self) -> Option<&'static str> {
        let required = [
            (self.replica_sets.watched.is_synced(), "ReplicaSet"),
            (self.analysis_runs.watched.is_synced(), "AnalysisRun"),
            (self.services.is_synced(), "Service"),
            (self.deployments.is_synced(), "Deployment"),
            (self.references.listed(), "Rollout"),
        ];
        let routers = self
            .routers
            .all()
            .into_iter()
            .map(|(_, w)| (w.is_synced(), w.resource));
        required
            .into_iter()
            .chain(routers)
            .find_map(|(synced, resource)| (!synced).then_some(resource))
    }

    /// Where a router reads objects of `kind`: the cache when that kind is watched.
    pub fn router_cache(&self, kind: &str) -> Option<ObjectCache> {
        self.routers
            .get(kind)
            .map(|(resource, watched)| ObjectCache {
                store: watched.store,
                resource,
                written: self.written.clone(),
            })
    }
}

/// A references index that has listed no Rollout.
fn listed_index() -> Index<Rollout> {
    let index = Index::new(references);
    index.apply(&watcher::Event::Init);
    index.apply(&watcher::Event::InitDone);
    index
}

/// Drops what no reader of the cache uses from any object: field ownership and the copy
/// `kubectl apply` keeps of it.
pub fn trim_meta(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
    }
}

/// Drops every annotation of `meta` but `kept`.
pub fn keep_only_annotation(meta: &mut ObjectMeta, kept: &str) {
    meta.annotations = meta
        .annotations
        .take()
        .and_then(|mut annotations| annotations.remove_entry(kept))
        .map(|entry| [entry].into());
}

/// A Service as vigil reads it: its selector and which Rollout manages it.
pub fn trim_service(service: &mut Service) {
    trim_meta(&mut service.metadata);
    keep_only_annotation(&mut service.metadata, MANAGED_BY_ANNOTATION);
    service.metadata.labels = None;
    service.status = None;
    if let Some(spec) = service.spec.as_mut() {
        *spec = k8s_openapi::api::core::v1::ServiceSpec {
            selector: spec.selector.take(),
            ..Default::default()
        };
    }
}

/// A Deployment as vigil reads it: its spec (template and replicas).
pub fn trim_deployment(deployment: &mut Deployment) {
    trim_meta(&mut deployment.metadata);
    deployment.status = None;
}

/// The keys under which the reference index files a Rollout: each object it names, as
/// `Kind/namespace/name` (see [`referenced`]).
pub fn references(rollout: &Rollout) -> Vec<String> {
    let namespace = rollout.namespace().unwrap_or_default();
    let (stable_service, canary_service) = crate::rollout::service_names(&rollout.spec);
    let baseline_service = crate::rollout::baseline::service(&rollout.spec);
    let mut keys: Vec<String> = [stable_service, canary_service, baseline_service]
        .into_iter()
        .flatten()
        .map(|service| referenced("Service", &namespace, service))
        .collect();
    if let Some(workload) = &rollout.spec.workload_ref {
        keys.push(referenced(&workload.kind, &namespace, &workload.name));
    }
    for (kind, name) in router_objects(rollout) {
        keys.push(referenced(kind, &namespace, &name));
    }
    keys.sort();
    keys.dedup();
    keys
}

/// The reference-index key of the object `kind` `name` in `namespace`.
pub fn referenced(kind: &str, namespace: &str, name: &str) -> String {
    format!("{kind}/{namespace}/{name}")
}

/// The router objects a Rollout's `trafficRouting` names, as `(kind, name)`.
fn router_objects(rollout: &Rollout) -> Vec<(&'static str, String)> {
    let Some(routing) = &rollout.spec.strategy.canary.traffic_routing else {
        return Vec::new();
    };
    let mut objects = Vec::new();
    if let Some(gateway) = &routing.gateway_api {
        objects.push(("HTTPRoute", gateway.http_route.clone()));
    }
    if let Some(istio) = &routing.istio {
        for (_, vs) in istio.entries() {
            objects.push(("VirtualService", vs.name.clone()));
        }
        if let Some(rule) = &istio.destination_rule {
            objects.push(("DestinationRule", rule.name.clone()));
        }
    }
    if let Some(nginx) = &routing.nginx {
        objects.push(("Ingress", nginx.stable_ingress.clone()));
        let canary =
            crate::traffic::nginx::canary_ingress_name(&rollout.name_any(), &nginx.stable_ingress);
        objects.push(("Ingress", canary));
    }
    if let Some(smi) = &routing.smi {
        let name = smi
            .traffic_split_name
            .clone()
            .unwrap_or_else(|| rollout.name_any());
        objects.push(("TrafficSplit", name));
    }
    if let Some(traefik) = &routing.traefik {
        objects.push((
            "TraefikService",
            traefik.weighted_traefik_service_name.clone(),
        ));
    }
    objects
}

/// The Rollouts filed in `references` under the object `kind` `name` in `namespace`.
pub fn rollouts_referencing(
    references: &Index<Rollout>,
    kind: &str,
    namespace: &str,
    name: &str,
) -> Vec<ObjectRef<Rollout>> {
    references
        .lookup(&referenced(kind, namespace, name))
        .into_iter()
        .map(|(namespace, name)| ObjectRef::new(&name).within(&namespace))
        .collect()
}

/// The Rollout that controls `object` (its controller owner reference), if any.
pub fn controlling_rollout<K: Resource>(object: &K) -> Option<ObjectRef<Rollout>> {
    let owner = object
        .owner_references()
        .iter()
        .find(|o| o.controller == Some(true) && o.kind == "Rollout")?;
    let namespace = object.meta().namespace.as_deref()?;
    Some(ObjectRef::new(&owner.name).within(namespace))
}

/// The Rollouts a change of an object concerns.
pub type Wakes<K> = Box<dyn Fn(&K) -> Vec<ObjectRef<Rollout>> + Send + Sync>;

/// A watch's events, as [`watch_events`] or [`lean_watch_events`] opens them.
pub type WatchEvents<K> =
    futures::stream::BoxStream<'static, Result<watcher::Event<K>, watcher::Error>>;

/// The events of a watch of `api` with `config`.
pub fn watch_events<K>(api: Api<K>, config: watcher::Config) -> WatchEvents<K>
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    watcher(api, config).boxed()
}

/// The events of a watch of `api` with `config`, its objects decoded without their field
/// ownership (see [`super::lean_meta`]).
pub fn lean_watch_events<K>(api: Api<Lean<K>>, config: watcher::Config) -> WatchEvents<K>
where
    K: SpecAndStatus + Send + 'static,
{
    watcher(api, config).map_ok(assembled).boxed()
}

/// How one cached kind is watched and whom its changes wake.
pub struct CacheWatch<K: Resource + 'static> {
    /// The watch's events.
    pub events: WatchEvents<K>,
    /// The kind's name in health, metrics and logs.
    pub resource: &'static str,
    /// What to drop from each object before it is stored.
    pub trim: fn(&mut K),
    /// An index kept with the store.
    pub index: Option<Index<K>>,
    /// The Rollouts a change of an object concerns.
    pub wakes: Wakes<K>,
    /// Also told of every object to reconcile (see [`Trigger`]).
    pub trigger: Option<Trigger<K>>,
}

/// Where cache watches report.
#[derive(Clone)]
pub struct CacheReporting {
    /// Watch health for `/readyz`.
    pub health: WatchHealth,
    /// `vigil_watch_errors_total`.
    pub metrics: Metrics,
    /// Rollouts to reconcile.
    pub wake: UnboundedSender<ObjectRef<Rollout>>,
}

/// Where the AnalysisRun controller hears of runs to reconcile: every run applied, every run
/// of the first list, and the runs a re-list found changed. One watch feeds both controllers.
pub type Trigger<K> = futures::channel::mpsc::UnboundedSender<Arc<K>>;

/// Who hears of a cached object's change: the Rollouts it concerns, and the trigger.
struct Notify<K: Resource + 'static>
where
    K::DynamicType: std::hash::Hash + Eq + Clone,
{
    wakes: Wakes<K>,
    wake: UnboundedSender<ObjectRef<Rollout>>,
    trigger: Option<Trigger<K>>,
    store: Store<K>,
    dyntype: K::DynamicType,
}

impl<K> Notify<K>
where
    K: Resource + Clone + 'static,
    K::DynamicType: std::hash::Hash + Eq + Clone,
{
    /// Wakes the Rollouts `object` concerns.
    fn wake(&self, object: &K) {
        for rollout in (self.wakes)(object) {
            // The controller is gone only when shutting down.
            let _ = self.wake.send(rollout);
        }
    }

    /// Wakes the Rollouts `object` concerns and triggers its stored version (if still
    /// there: a vanished object needs no reconcile of its own).
    fn changed(&self, object: &K) {
        self.wake(object);
        if let Some(trigger) = &self.trigger
            && let Some(stored) = self
                .store
                .get(&ObjectRef::from_obj_with(object, self.dyntype.clone()))
        {
            let _ = trigger.unbounded_send(stored);
        }
    }

    /// Triggers every stored object (after the first list).
    fn trigger_all(&self) {
        if let Some(trigger) = &self.trigger {
            for object in self.store.state() {
                let _ = trigger.unbounded_send(object);
            }
        }
    }
}

/// The AnalysisRun controller's side of [`Trigger`].
pub type RunTriggers = futures::channel::mpsc::UnboundedReceiver<Arc<AnalysisRun>>;

/// Starts the watch of `watch` into `writer` on its own task (driven whether or not a
/// controller runs) and returns its store. Changes wake the Rollouts they concern: live
/// events as they come, and after a re-list (a watch restart) the objects that appeared,
/// changed or vanished meanwhile; not the first list (a starting controller reconciles
/// every Rollout anyway).
pub fn spawn_cache<K>(
    watch: CacheWatch<K>,
    writer: Writer<K>,
    dyntype: K::DynamicType,
    reporting: &CacheReporting,
) -> (Watched<K>, JoinHandle<()>)
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: std::hash::Hash + Eq + Clone + Send + Sync,
{
    let synced = Arc::new(AtomicBool::new(false));
    let watched = Watched {
        store: writer.as_reader(),
        resource: watch.resource,
        synced: synced.clone(),
    };
    let CacheWatch {
        events,
        resource,
        trim,
        index,
        wakes,
        trigger,
    } = watch;
    let mut diff = RelistDiff::new(writer.as_reader(), dyntype.clone());
    let relisted = diff.changed();
    let stream = events
        .default_backoff()
        .modify(trim)
        .inspect(move |event| {
            if let Ok(event) = event {
                if let Some(index) = &index {
                    index.apply(event);
                }
                diff.observe(event);
            }
        })
        .reflect(writer);
    let stream = observed(
        stream,
        resource,
        reporting.health.clone(),
        reporting.metrics.clone(),
    );
    let notify = Notify {
        wakes,
        wake: reporting.wake.clone(),
        trigger,
        store: watched.store.clone(),
        dyntype,
    };
    let task = tokio::spawn(stream.for_each(move |event| {
        match &event {
            Ok(watcher::Event::InitDone) => {
                if synced.swap(true, Ordering::AcqRel) {
                    for object in relist::take(&relisted) {
                        notify.changed(&object);
                    }
                } else {
                    notify.trigger_all();
                }
            }
            Ok(watcher::Event::Apply(object)) => notify.changed(object),
            Ok(watcher::Event::Delete(object)) => notify.wake(object),
            _ => {}
        }
        futures::future::ready(())
    }));
    (watched, task)
}

/// Starts the watch of a kind owned by Rollouts: indexed by the rollout label, waking the
/// Rollout that controls the changed object (and telling `trigger` of each object to
/// reconcile, when the kind has a controller of its own).
pub fn spawn_children<K>(
    events: WatchEvents<K>,
    resource: &'static str,
    trim: fn(&mut K),
    trigger: Option<Trigger<K>>,
    reporting: &CacheReporting,
) -> Children<K>
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: std::hash::Hash + Eq + Clone + Default + Send + Sync,
{
    let index = Index::new(by_rollout_label);
    let watch = CacheWatch {
        events,
        resource,
        trim,
        index: Some(index.clone()),
        wakes: Box::new(|object: &K| controlling_rollout(object).into_iter().collect()),
        trigger,
    };
    let (watched, _task) = spawn_cache(
        watch,
        Writer::default(),
        K::DynamicType::default(),
        reporting,
    );
    Children { watched, index }
}

/// Starts the watch of a kind Rollouts name (Services, Deployments, router objects; of
/// type `dyntype`), waking the Rollouts that name the changed object. The task ends only
/// when aborted (a router kind whose CRD is removed).
pub fn spawn_referenced<K>(
    api: Api<K>,
    resource: &'static str,
    trim: fn(&mut K),
    dyntype: K::DynamicType,
    references: &Index<Rollout>,
    reporting: &CacheReporting,
) -> (Watched<K>, JoinHandle<()>)
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: std::hash::Hash + Eq + Clone + Send + Sync,
{
    let references = references.clone();
    let watch = CacheWatch {
        events: watch_events(api, watcher::Config::default()),
        resource,
        trim,
        index: None,
        wakes: Box::new(move |object: &K| {
            rollouts_referencing(
                &references,
                resource,
                object.meta().namespace.as_deref().unwrap_or_default(),
                object.meta().name.as_deref().unwrap_or_default(),
            )
        }),
        trigger: None,
    };
    spawn_cache(watch, Writer::new(dyntype.clone()), dyntype, reporting)
}

/// Drops field ownership and the `kubectl apply` copy from a router object.
pub fn trim_dynamic(object: &mut DynamicObject) {
    trim_meta(&mut object.metadata);
}

/// Drops field ownership and the `kubectl apply` copy from an AnalysisRun, and from a
/// completed one what neither controller reads any more: a completed run is a record. The
/// Rollout controller reads its phase, message, score and each metric's latest measurement
/// (its summary); the AnalysisRun controller only whether a metric ran Jobs (to delete them),
/// so those metrics stay, and the other metrics, the arguments and the older measurements go.
/// A run in progress stays whole: the AnalysisRun controller measures from its spec.
pub fn trim_run(run: &mut AnalysisRun) {
    trim_meta(&mut run.metadata);
    let completed = run
        .status
        .as_ref()
        .and_then(|status| status.phase)
        .is_some_and(crate::api::AnalysisPhase::is_completed);
    if !completed {
        return;
    }
    run.spec
        .metrics
        .retain(|metric| metric.provider.job.is_some());
    run.spec.args = Vec::new();
    if let Some(status) = run.status.as_mut() {
        for result in &mut status.metric_results {
            let older = result.measurements.len().saturating_sub(1);
            result.measurements.drain(..older);
            result.measurements.shrink_to_fit();
            result.sequential_state = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn replica_set(namespace: &str, name: &str, rollout: &str) -> ReplicaSet {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": namespace,
                         "labels": {ROLLOUT_LABEL: rollout},
                         "annotations": {LAST_APPLIED: "{}"},
                         "managedFields": [{"manager": "kubectl"}]},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"spec": {"containers": [{"name": "app", "image": "app:1"}]}}},
            "status": {"replicas": 2, "readyReplicas": 1}
        }))
        .expect("replica set")
    }

    #[test]
    fn children_are_found_by_label_and_follow_relists() {
        let index = Index::new(by_rollout_label::<ReplicaSet>);
        index.apply(&watcher::Event::Apply(replica_set("shop", "web-a", "web")));
        index.apply(&watcher::Event::Apply(replica_set("shop", "web-b", "web")));
        index.apply(&watcher::Event::Apply(replica_set("bank", "web-c", "web")));
        index.apply(&watcher::Event::Apply(replica_set(
            "shop", "cart-a", "cart",
        )));
        let names = |key: &str| -> Vec<String> {
            index
                .lookup(key)
                .into_iter()
                .map(|(_, name)| name)
                .collect()
        };
        assert_eq!(names("shop/web"), ["web-a", "web-b"]);
        // Relabelled to another Rollout: moves.
        index.apply(&watcher::Event::Apply(replica_set("shop", "web-b", "cart")));
        assert_eq!(names("shop/web"), ["web-a"]);
        assert_eq!(names("shop/cart"), ["cart-a", "web-b"]);
        // A relist replaces everything (web-a was deleted while the watch was down).
        index.apply(&watcher::Event::Init);
        index.apply(&watcher::Event::InitApply(replica_set(
            "shop", "cart-a", "cart",
        )));
        assert_eq!(
            names("shop/web"),
            ["web-a"],
            "the old index serves until the list ends"
        );
        index.apply(&watcher::Event::InitDone);
        assert!(names("shop/web").is_empty());
        assert_eq!(names("shop/cart"), ["cart-a"]);
        index.apply(&watcher::Event::Delete(replica_set(
            "shop", "cart-a", "cart",
        )));
        assert!(names("shop/cart").is_empty());
    }

    fn run(phase: &str) -> AnalysisRun {
        let measurement = |value: &str| {
            json!({"phase": "Successful", "startedAt": "2026-01-01T00:00:00.000000Z",
                   "value": value, "reason": format!("{value} < 0.05")})
        };
        serde_json::from_value(json!({
            "apiVersion": "vigil.dev/v1alpha1", "kind": "AnalysisRun",
            "metadata": {"name": "web-abc-1", "namespace": "shop",
                         "labels": {ROLLOUT_LABEL: "web"},
                         "managedFields": [{"manager": "vigil"}]},
            "spec": {
                "metrics": [
                    {"name": "errors", "successCondition": "result < 0.05",
                     "provider": {"prometheus": {"address": "http://prom:9090", "query": "q"}}},
                    {"name": "smoke",
                     "provider": {"job": {"spec": {"template": {"spec": {
                         "containers": [{"name": "t", "image": "curl"}],
                         "restartPolicy": "Never"}}}}}}
                ],
                "args": [{"name": "service", "value": "web"}]
            },
            "status": {
                "phase": phase, "message": "all metrics passed",
                "metricResults": [{"name": "errors", "phase": phase, "count": 3, "successful": 3,
                    "measurements": [measurement("0.01"), measurement("0.02"), measurement("0.03")],
                    "sequentialState": {"k": 1}}]
            }
        }))
        .expect("analysis run")
    }

    #[test]
    fn a_cached_completed_run_keeps_its_summary_and_its_job_metrics_only() {
        let whole = run("Successful");
        let mut trimmed = whole.clone();
        trim_run(&mut trimmed);
        assert!(trimmed.metadata.managed_fields.is_none());
        // What the Rollout controller reads is unchanged.
        assert_eq!(
            crate::platform::kubernetes::observe::summarize_run(&trimmed),
            crate::platform::kubernetes::observe::summarize_run(&whole)
        );
        assert_eq!(trimmed.metadata.labels, whole.metadata.labels);
        // What the AnalysisRun controller reads of a completed run: the metrics with Jobs.
        let names: Vec<&str> = trimmed
            .spec
            .metrics
            .iter()
            .map(|m| m.name.as_str())
            .collect();
        assert_eq!(names, ["smoke"]);
        assert!(trimmed.spec.args.is_empty());
        let result = &trimmed.status.as_ref().expect("status").metric_results[0];
        assert_eq!(result.measurements.len(), 1);
        assert_eq!(result.measurements[0].value.as_deref(), Some("0.03"));
        assert_eq!((result.count, result.successful), (3, 3));
        assert!(result.sequential_state.is_none());
    }

    #[test]
    fn a_cached_run_in_progress_stays_whole() {
        for phase in ["Pending", "Running"] {
            let whole = run(phase);
            let mut trimmed = whole.clone();
            trim_run(&mut trimmed);
            assert_eq!(trimmed.spec, whole.spec, "{phase}");
            assert_eq!(trimmed.status, whole.status, "{phase}");
        }
    }

    #[test]
    fn a_cached_service_keeps_its_selector_and_manager_only() {
        let mut service: Service = serde_json::from_value(json!({
            "metadata": {"name": "web-stable", "namespace": "shop",
                         "annotations": {LAST_APPLIED: "{}", "team": "shop",
                                         MANAGED_BY_ANNOTATION: "web"}},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}], "clusterIP": "10.0.0.1"}
        }))
        .expect("service");
        trim_service(&mut service);
        let spec = service.spec.expect("spec");
        assert_eq!(spec.selector.expect("selector")["app"], "web");
        assert!(spec.ports.is_none() && spec.cluster_ip.is_none());
        assert_eq!(
            service.metadata.annotations,
            Some([(MANAGED_BY_ANNOTATION.to_owned(), "web".to_owned())].into())
        );
    }

    #[test]
    fn a_rollout_is_filed_under_every_object_it_names() {
        let rollout: Rollout = serde_json::from_value(json!({
            "apiVersion": "vigil.dev/v1alpha1", "kind": "Rollout",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {
                "selector": {"matchLabels": {"app": "web"}},
                "workloadRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web-deploy"},
                "strategy": {"canary": {
                    "stableService": "web-stable", "canaryService": "web-canary",
                    "trafficRouting": {"gatewayAPI": {"httpRoute": "web-route"}}
                }}
            }
        }))
        .expect("rollout");
        assert_eq!(
            references(&rollout),
            [
                "Deployment/shop/web-deploy",
                "HTTPRoute/shop/web-route",
                "Service/shop/web-canary",
                "Service/shop/web-stable",
            ]
        );
        let index = Index::new(references);
        index.apply(&watcher::Event::Apply(rollout.clone()));
        let woken = rollouts_referencing(&index, "Service", "shop", "web-canary");
        assert_eq!(woken, [ObjectRef::new("web").within("shop")]);
        assert!(rollouts_referencing(&index, "Service", "bank", "web-canary").is_empty());
        assert!(rollouts_referencing(&index, "HTTPRoute", "shop", "web-stable").is_empty());
        // What a changed Rollout stops naming comes back (so its Rollouts can be woken).
        let mut moved = rollout.clone();
        moved.spec.strategy.canary.canary_service = Some("web-canary-2".into());
        assert_eq!(
            index.apply(&watcher::Event::Apply(moved.clone())),
            ["Service/shop/web-canary"]
        );
        assert_eq!(
            index.apply(&watcher::Event::Delete(moved)).len(),
            4,
            "a deleted Rollout names nothing"
        );
        index.apply(&watcher::Event::Apply(rollout));
        // Applied events alone are not a whole list: a missing Rollout may be on its way.
        assert!(!index.listed());
        index.apply(&watcher::Event::Init);
        assert!(!index.listed());
        index.apply(&watcher::Event::InitDone);
        assert!(index.listed());
        assert!(rollouts_referencing(&index, "Service", "shop", "web-canary").is_empty());
    }
}

//! The object store: the resource types served, the objects, the bounded event history and the
//! open watches. Every method runs under the server's one lock, so each write is atomic, and
//! nothing but listing walks all objects.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use super::error::ApiError;
use super::fields::{self, Writer};
use super::select::{FieldSelector, LabelSelector};

/// The key of the CRD resource, whose objects define more served types.
pub(crate) const CRD_KEY: &str = "apiextensions.k8s.io/v1/customresourcedefinitions";

/// Where a resource keeps its replica counts, for the `/scale` subresource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ScalePaths {
    pub spec_replicas: Vec<String>,
    pub status_replicas: Vec<String>,
    pub label_selector: Option<Vec<String>>,
}

impl ScalePaths {
    fn parse(spec: &str, status: &str, selector: Option<&str>) -> Self {
        let split = |p: &str| {
            p.trim_start_matches('.')
                .split('.')
                .map(str::to_string)
                .collect()
        };
        Self {
            spec_replicas: split(spec),
            status_replicas: split(status),
            label_selector: selector.map(split),
        }
    }
}

/// A served resource type (one version of one resource).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ResourceType {
    pub group: String,
    pub version: String,
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub namespaced: bool,
    /// Has the `/status` subresource: main writes ignore `.status`, status writes only it.
    pub status: bool,
    pub scale: Option<ScalePaths>,
    pub short_names: Vec<String>,
}

impl ResourceType {
    /// `group/version`, or `version` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The store key: `group/version/plural` (core: `/v1/pods`).
    pub fn key(&self) -> String {
        gvr_key(&self.group, &self.version, &self.plural)
    }

    /// `plural.group` as Kubernetes names a resource in messages.
    pub fn resource_name(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

/// The store key of a resource.
pub(crate) fn gvr_key(group: &str, version: &str, plural: &str) -> String {
    format!("{group}/{version}/{plural}")
}

/// Parses a test-facing `group/version/plural` (or `version/plural` for the core group).
pub(crate) fn parse_gvr(gvr: &str) -> Option<String> {
    match gvr.split('/').collect::<Vec<_>>().as_slice() {
        [version, plural] => Some(gvr_key("", version, plural)),
        [group, version, plural] => Some(gvr_key(group, version, plural)),
        _ => None,
    }
}

fn builtin(
    group: &str,
    version: &str,
    plural: &str,
    kind: &str,
    namespaced: bool,
    status: bool,
    short_names: &[&str],
) -> ResourceType {
    ResourceType {
        group: group.to_string(),
        version: version.to_string(),
        plural: plural.to_string(),
        singular: kind.to_lowercase(),
        kind: kind.to_string(),
        namespaced,
        status,
        scale: None,
        short_names: short_names.iter().map(|s| s.to_string()).collect(),
    }
}

/// The built-in types; custom resources come from CRD objects.
pub(crate) fn builtin_types() -> Vec<ResourceType> {
    let replica_scale = Some(ScalePaths::parse(
        ".spec.replicas",
        ".status.replicas",
        Some(".spec.selector"),
    ));
    vec![
        builtin("", "v1", "namespaces", "Namespace", false, true, &["ns"]),
        builtin("", "v1", "pods", "Pod", true, true, &["po"]),
        builtin("", "v1", "services", "Service", true, true, &["svc"]),
        builtin("", "v1", "secrets", "Secret", true, false, &[]),
        builtin("", "v1", "configmaps", "ConfigMap", true, false, &["cm"]),
        builtin("", "v1", "events", "Event", true, false, &["ev"]),
        ResourceType {
            scale: replica_scale.clone(),
            ..builtin(
                "apps",
                "v1",
                "replicasets",
                "ReplicaSet",
                true,
                true,
                &["rs"],
            )
        },
        ResourceType {
            scale: replica_scale,
            ..builtin(
                "apps",
                "v1",
                "deployments",
                "Deployment",
                true,
                true,
                &["deploy"],
            )
        },
        builtin("batch", "v1", "jobs", "Job", true, true, &[]),
        builtin(
            "networking.k8s.io",
            "v1",
            "ingresses",
            "Ingress",
            true,
            true,
            &["ing"],
        ),
        builtin(
            "events.k8s.io",
            "v1",
            "events",
            "Event",
            true,
            false,
            &["ev"],
        ),
        builtin(
            "coordination.k8s.io",
            "v1",
            "leases",
            "Lease",
            true,
            false,
            &[],
        ),
        ResourceType {
            singular: "customresourcedefinition".to_string(),
            ..builtin(
                "apiextensions.k8s.io",
                "v1",
                "customresourcedefinitions",
                "CustomResourceDefinition",
                false,
                true,
                &["crd", "crds"],
            )
        },
    ]
}

/// The types a CRD object serves: one per served version.
pub(crate) fn types_from_crd(crd: &Value) -> Vec<ResourceType> {
    let text = |p: &str| crd.pointer(p).and_then(Value::as_str).unwrap_or("");
    let (group, plural, kind) = (
        text("/spec/group"),
        text("/spec/names/plural"),
        text("/spec/names/kind"),
    );
    if group.is_empty() || plural.is_empty() || kind.is_empty() {
        return Vec::new();
    }
    let singular = match text("/spec/names/singular") {
        "" => kind.to_lowercase(),
        s => s.to_string(),
    };
    let short_names: Vec<String> = crd
        .pointer("/spec/names/shortNames")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let versions = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    versions
        .iter()
        .filter(|v| v.get("served").and_then(Value::as_bool) != Some(false))
        .filter_map(|v| {
            let version = v.get("name")?.as_str()?;
            let scale = v.pointer("/subresources/scale").map(|s| {
                let path = |k: &str| s.get(k).and_then(Value::as_str);
                ScalePaths::parse(
                    path("specReplicasPath").unwrap_or(".spec.replicas"),
                    path("statusReplicasPath").unwrap_or(".status.replicas"),
                    path("labelSelectorPath"),
                )
            });
            Some(ResourceType {
                group: group.to_string(),
                version: version.to_string(),
                plural: plural.to_string(),
                singular: singular.clone(),
                kind: kind.to_string(),
                namespaced: text("/spec/scope") != "Cluster",
                status: v.pointer("/subresources/status").is_some(),
                scale,
                short_names: short_names.clone(),
            })
        })
        .collect()
}

/// A stored object: its JSON (what GET, LIST and WATCH send as is) and what selectors need.
/// Objects are kept serialized because a parsed `serde_json::Value` takes some 20 times the
/// memory of its JSON, and the server must hold 10,000 Rollouts for controller benchmarks.
#[derive(Debug)]
pub(crate) struct Stored {
    pub json: Bytes,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
}

impl Stored {
    fn new(object: &Value) -> Arc<Self> {
        let text = |key: &str| meta_str(object, key).unwrap_or("").to_string();
        let labels = meta(object)
            .and_then(|m| m.get("labels"))
            .and_then(Value::as_object)
            .map(|l| {
                l.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        Arc::new(Self {
            // Serializing a `Value` cannot fail.
            json: Bytes::from(serde_json::to_vec(object).unwrap_or_default()),
            namespace: text("namespace"),
            labels,
        })
    }

    /// The object, parsed.
    pub fn value(&self) -> Value {
        // The bytes were serialized from a `Value`, so they parse.
        serde_json::from_slice(&self.json).unwrap_or(Value::Null)
    }
}

/// The kind of a watch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "ADDED",
            Self::Modified => "MODIFIED",
            Self::Deleted => "DELETED",
        }
    }
}

/// One change, kept in the bounded history for watches that resume from a resourceVersion.
struct Event {
    rv: u64,
    gvr: String,
    kind: EventType,
    object: Arc<Stored>,
    /// The object before a modification, so a selector watch can turn a change that moves an
    /// object out of (into) its selection into DELETED (ADDED), as Kubernetes does.
    old: Option<Arc<Stored>>,
}

/// What a watch or list selects.
#[derive(Debug, Clone, Default)]
pub(crate) struct Filter {
    pub namespace: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Filter {
    pub fn matches(&self, object: &Stored) -> bool {
        self.namespace
            .as_deref()
            .is_none_or(|ns| object.namespace == ns)
            && self.labels.matches(&object.labels)
            // Field selectors are rare: parse the object only for them.
            && (self.fields.is_empty() || self.fields.matches(&object.value()))
    }

    /// The event this watcher sees for a change, if any.
    fn classify(
        &self,
        kind: EventType,
        object: &Stored,
        old: Option<&Stored>,
    ) -> Option<EventType> {
        let now = self.matches(object);
        match kind {
            EventType::Added | EventType::Deleted => now.then_some(kind),
            EventType::Modified => match (old.is_some_and(|o| self.matches(o)), now) {
                (true, true) => Some(EventType::Modified),
                (false, true) => Some(EventType::Added),
                (true, false) => Some(EventType::Deleted),
                (false, false) => None,
            },
        }
    }
}

/// An event as delivered to one watcher.
pub(crate) type WatchItem = (EventType, Arc<Stored>);

struct Watcher {
    gvr: String,
    filter: Filter,
    tx: mpsc::UnboundedSender<WatchItem>,
    /// The server's own controllers; test hooks that end watches leave these alone.
    internal: bool,
}

/// How a watch starts.
pub(crate) struct WatchStart {
    /// Events to send first: synthetic ADDED for a fresh watch, or the replayed history.
    pub initial: Vec<WatchItem>,
    pub rx: mpsc::UnboundedReceiver<WatchItem>,
    /// The resourceVersion at the start, for the initial-events-end bookmark.
    pub rv: u64,
}

/// Which part of an object a write may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sub {
    Main,
    Status,
}

impl Sub {
    fn name(self) -> &'static str {
        match self {
            Self::Main => "",
            Self::Status => "status",
        }
    }
}

/// The supported patch types, by `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PatchKind {
    Merge,
    Json,
    /// Strategic merge, treated as a JSON merge patch (lists are replaced, not merged by key).
    Strategic,
    Apply,
}

impl PatchKind {
    pub fn from_content_type(content_type: &str) -> Option<Self> {
        let media = content_type.split(';').next().unwrap_or("").trim();
        match media {
            "application/merge-patch+json" => Some(Self::Merge),
            "application/json-patch+json" => Some(Self::Json),
            "application/strategic-merge-patch+json" => Some(Self::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Some(Self::Apply),
            _ => None,
        }
    }
}

type Objects = BTreeMap<(String, String), Arc<Stored>>;

/// All server state.
pub(crate) struct Store {
    rv: u64,
    /// Watches from below this resourceVersion are answered 410 Gone.
    compacted_rv: u64,
    history: VecDeque<Event>,
    history_capacity: usize,
    types: BTreeMap<String, Arc<ResourceType>>,
    /// CRD name → the type keys it serves.
    crd_types: HashMap<String, Vec<String>>,
    objects: HashMap<String, Objects>,
    watchers: Vec<Watcher>,
}

/// The current time as Kubernetes writes it (RFC 3339, seconds).
pub(crate) fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn new_uid() -> String {
    let n: u128 = rand::random();
    let hex = format!("{n:032x}");
    format!(
        "{}-{}-4{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        &hex[16..20],
        &hex[20..32]
    )
}

fn name_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect()
}

fn meta(object: &Value) -> Option<&Map<String, Value>> {
    object.get("metadata").and_then(Value::as_object)
}

fn meta_str<'a>(object: &'a Value, key: &str) -> Option<&'a str> {
    meta(object)
        .and_then(|m| m.get(key))
        .and_then(Value::as_str)
}

fn meta_mut(object: &mut Value) -> &mut Map<String, Value> {
    if !object.get("metadata").is_some_and(Value::is_object) {
        object["metadata"] = json!({});
    }
    match object.get_mut("metadata") {
        Some(Value::Object(m)) => m,
        // Just made sure it is an object.
        _ => unreachable!("metadata is an object"),
    }
}

/// Whether two versions differ outside metadata (and outside status when it is a
/// subresource): that is what bumps `metadata.generation`.
fn spec_changed(ty: &ResourceType, old: &Value, new: &Value) -> bool {
    let skip = |k: &str| {
        k == "metadata" || k == "apiVersion" || k == "kind" || (ty.status && k == "status")
    };
    let (Some(a), Some(b)) = (old.as_object(), new.as_object()) else {
        return old != new;
    };
    a.iter()
        .filter(|(k, _)| !skip(k))
        .any(|(k, v)| b.get(k) != Some(v))
        || b.keys().filter(|k| !skip(k)).any(|k| !a.contains_key(k))
}

/// Whether a write changes nothing but bookkeeping: such writes keep the resourceVersion and
/// send no event, as in Kubernetes (a controller re-writing the same status does not loop).
fn same_content(old: &Value, new: &Value) -> bool {
    let volatile = |k: &str| k == "resourceVersion" || k == "managedFields";
    let (Some(a), Some(b)) = (old.as_object(), new.as_object()) else {
        return old == new;
    };
    if a.len() != b.len()
        || a.iter()
            .any(|(k, v)| k != "metadata" && b.get(k) != Some(v))
    {
        return false;
    }
    let empty = Map::new();
    let ma = meta(old).unwrap_or(&empty);
    let mb = meta(new).unwrap_or(&empty);
    ma.iter()
        .filter(|(k, _)| !volatile(k))
        .all(|(k, v)| mb.get(k) == Some(v))
        && mb
            .keys()
            .filter(|k| !volatile(k))
            .all(|k| ma.contains_key(k))
}

fn has_finalizers(object: &Value) -> bool {
    meta(object)
        .and_then(|m| m.get("finalizers"))
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty())
}

impl Store {
    pub fn new(history_capacity: usize) -> Self {
        let mut store = Self {
            rv: 0,
            compacted_rv: 0,
            history: VecDeque::new(),
            history_capacity: history_capacity.max(1),
            types: BTreeMap::new(),
            crd_types: HashMap::new(),
            objects: HashMap::new(),
            watchers: Vec::new(),
        };
        for ty in builtin_types() {
            store.types.insert(ty.key(), Arc::new(ty));
        }
        store
    }

    /// The served type for a key.
    pub fn resource_type(&self, key: &str) -> Option<Arc<ResourceType>> {
        self.types.get(key).cloned()
    }

    /// Every served type, sorted by key.
    pub fn types(&self) -> Vec<Arc<ResourceType>> {
        self.types.values().cloned().collect()
    }

    /// The current (global) resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    /// The number of stored objects.
    pub fn object_count(&self) -> usize {
        self.objects.values().map(BTreeMap::len).sum()
    }

    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    pub fn get(&self, ty: &ResourceType, ns: &str, name: &str) -> Result<Arc<Stored>, ApiError> {
        self.objects
            .get(&ty.key())
            .and_then(|objs| objs.get(&(ns.to_string(), name.to_string())))
            .cloned()
            .ok_or_else(|| ApiError::not_found(&ty.resource_name(), name))
    }

    /// The stored object and its parsed value.
    pub fn get_value(
        &self,
        ty: &ResourceType,
        ns: &str,
        name: &str,
    ) -> Result<(Arc<Stored>, Value), ApiError> {
        let stored = self.get(ty, ns, name)?;
        let value = stored.value();
        Ok((stored, value))
    }

    /// The matching objects (in namespace, name order) and the resourceVersion they are at.
    pub fn list(&self, ty: &ResourceType, filter: &Filter) -> (u64, Vec<Arc<Stored>>) {
        let items = self
            .objects
            .get(&ty.key())
            .map(|objs| {
                objs.values()
                    .filter(|obj| filter.matches(obj))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        (self.rv, items)
    }

    /// One page of [`Store::list`]: at most `limit` matching objects after the key `after`
    /// (all when `limit` is `None`), and whether more follow. Pages are read from the current
    /// contents, not from a snapshot at the first page's resourceVersion as etcd would: an
    /// object changed between pages shows its newer version (the watch from the list's
    /// resourceVersion replays the change anyway).
    pub fn list_page(
        &self,
        ty: &ResourceType,
        filter: &Filter,
        after: Option<&(String, String)>,
        limit: Option<usize>,
    ) -> (u64, Vec<Arc<Stored>>, bool) {
        use std::ops::Bound;
        let Some(objects) = self.objects.get(&ty.key()) else {
            return (self.rv, Vec::new(), false);
        };
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut matching = objects
            .range((start, Bound::Unbounded))
            .map(|(_, object)| object)
            .filter(|object| filter.matches(object));
        let items: Vec<Arc<Stored>> = match limit {
            Some(limit) => matching.by_ref().take(limit).cloned().collect(),
            None => matching.by_ref().cloned().collect(),
        };
        let more = matching.next().is_some();
        (self.rv, items, more)
    }

    /// Starts a watch from `since` (`None`/0: synthetic ADDED for every current object first).
    pub fn watch(
        &mut self,
        ty: &ResourceType,
        filter: Filter,
        since: Option<u64>,
        send_initial: bool,
        internal: bool,
    ) -> Result<WatchStart, ApiError> {
        let key = ty.key();
        let mut initial = Vec::new();
        match since {
            Some(n) if n > 0 && !send_initial => {
                if n < self.compacted_rv {
                    return Err(ApiError::gone(format!(
                        "too old resource version: {n} ({})",
                        self.compacted_rv
                    )));
                }
                for e in self.history.iter().filter(|e| e.rv > n && e.gvr == key) {
                    if let Some(t) = filter.classify(e.kind, &e.object, e.old.as_deref()) {
                        initial.push((t, e.object.clone()));
                    }
                }
            }
            _ => {
                let (_, items) = self.list(ty, &filter);
                initial.extend(items.into_iter().map(|o| (EventType::Added, o)));
            }
        }
        let (tx, rx) = mpsc::unbounded_channel();
        self.watchers.push(Watcher {
            gvr: key,
            filter,
            tx,
            internal,
        });
        Ok(WatchStart {
            initial,
            rx,
            rv: self.rv,
        })
    }

    /// Ends every client watch and makes every resourceVersion issued so far too old to watch
    /// from, as an etcd compaction would: watchers get 410 Gone and must relist.
    pub fn expire_watches(&mut self) {
        self.watchers.retain(|w| w.internal);
        self.history.clear();
        // A fresh resourceVersion (with no event) that lists return and watches may start from.
        self.rv += 1;
        self.compacted_rv = self.rv;
    }

    fn emit(&mut self, gvr: &str, kind: EventType, object: Arc<Stored>, old: Option<Arc<Stored>>) {
        self.watchers.retain(|w| {
            if w.tx.is_closed() {
                return false;
            }
            if w.gvr != gvr {
                return true;
            }
            match w.filter.classify(kind, &object, old.as_deref()) {
                Some(t) => w.tx.send((t, object.clone())).is_ok(),
                None => true,
            }
        });
        self.history.push_back(Event {
            rv: self.rv,
            gvr: gvr.to_string(),
            kind,
            object,
            old,
        });
        while self.history.len() > self.history_capacity {
            if let Some(evicted) = self.history.pop_front() {
                self.compacted_rv = self.compacted_rv.max(evicted.rv);
            }
        }
    }

    /// Checks `apiVersion`/`kind` (filling them in when missing) and the namespace.
    fn check_identity(ty: &ResourceType, ns: &str, object: &mut Value) -> Result<(), ApiError> {
        let Some(map) = object.as_object_mut() else {
            return Err(ApiError::bad_request(
                "the request body must be a JSON object",
            ));
        };
        let api_version = ty.api_version();
        for (field, expected) in [("apiVersion", &api_version), ("kind", &ty.kind)] {
            match map.get(field).and_then(Value::as_str) {
                None | Some("") => {
                    map.insert(field.to_string(), json!(expected));
                }
                Some(given) if given == expected.as_str() => {}
                Some(given) => {
                    return Err(ApiError::bad_request(format!(
                        "{field} {given:?} does not match the expected {expected:?}"
                    )));
                }
            }
        }
        let meta = meta_mut(object);
        if ty.namespaced {
            match meta.get("namespace").and_then(Value::as_str) {
                None | Some("") => {
                    meta.insert("namespace".to_string(), json!(ns));
                }
                Some(given) if given == ns => {}
                Some(_) => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
            }
        } else {
            meta.remove("namespace");
        }
        Ok(())
    }

    /// POST. `writer` records the creator's field ownership; `None` keeps `managedFields` as
    /// given (server-side apply computed them). `keep_status` is for test seeding.
    pub fn create(
        &mut self,
        ty: &ResourceType,
        ns: &str,
        mut object: Value,
        writer: Option<&Writer<'_>>,
        keep_status: bool,
    ) -> Result<Arc<Stored>, ApiError> {
        Self::check_identity(ty, ns, &mut object)?;
        let name = match (meta_str(&object, "name"), meta_str(&object, "generateName")) {
            (Some(name), _) if !name.is_empty() => name.to_string(),
            (_, Some(prefix)) if !prefix.is_empty() => format!("{prefix}{}", name_suffix()),
            _ => {
                return Err(ApiError::invalid(
                    "metadata.name: Required value: name or generateName is required",
                ));
            }
        };
        let key = ty.key();
        let id = (ns.to_string(), name.clone());
        if self
            .objects
            .get(&key)
            .is_some_and(|objs| objs.contains_key(&id))
        {
            return Err(ApiError::already_exists(&ty.resource_name(), &name));
        }
        if ty.status
            && !keep_status
            && let Some(map) = object.as_object_mut()
        {
            map.remove("status");
        }
        if key == CRD_KEY {
            object["status"] = crd_status(&object);
        }
        let rv = self.next_rv();
        let m = meta_mut(&mut object);
        m.insert("name".to_string(), json!(name));
        m.insert("uid".to_string(), json!(new_uid()));
        m.insert("resourceVersion".to_string(), json!(rv.to_string()));
        m.insert("creationTimestamp".to_string(), json!(now()));
        m.insert("generation".to_string(), json!(1));
        m.remove("deletionTimestamp");
        m.remove("deletionGracePeriodSeconds");
        if let Some(w) = writer {
            let mut entries = Vec::new();
            fields::record_update(&mut entries, w, fields::leaf_paths(&object));
            fields::write_entries(&mut object, &entries);
        }
        if key == CRD_KEY {
            self.register_crd(&name, &object);
        }
        let object = Stored::new(&object);
        self.objects
            .entry(key.clone())
            .or_default()
            .insert(id, object.clone());
        self.emit(&key, EventType::Added, object.clone(), None);
        Ok(object)
    }

    /// PUT (main resource or `/status`). With `writer`, the writer takes ownership of what it
    /// changed; without, `managedFields` come from `new` (server-side apply).
    pub fn update(
        &mut self,
        ty: &ResourceType,
        ns: &str,
        name: &str,
        mut new: Value,
        sub: Sub,
        writer: Option<&Writer<'_>>,
    ) -> Result<Arc<Stored>, ApiError> {
        let (old_stored, old) = self.get_value(ty, ns, name)?;
        Self::check_identity(ty, ns, &mut new)?;
        match meta_str(&new, "name") {
            None | Some("") => {
                meta_mut(&mut new).insert("name".to_string(), json!(name));
            }
            Some(given) if given == name => {}
            Some(_) => {
                return Err(ApiError::bad_request(
                    "the name of the object does not match the name on the URL",
                ));
            }
        }
        if let Some(given) = meta_str(&new, "resourceVersion").filter(|rv| !rv.is_empty())
            && Some(given) != meta_str(&old, "resourceVersion")
        {
            return Err(ApiError::stale(&ty.resource_name(), name));
        }
        let managed = meta(&new).and_then(|m| m.get("managedFields")).cloned();
        let mut object = match sub {
            Sub::Status => {
                let mut object = old.clone();
                match new.get("status") {
                    Some(status) => object["status"] = status.clone(),
                    None => {
                        if let Some(map) = object.as_object_mut() {
                            map.remove("status");
                        }
                    }
                }
                object
            }
            Sub::Main => {
                if ty.status
                    && let Some(map) = new.as_object_mut()
                {
                    match old.get("status") {
                        Some(status) => map.insert("status".to_string(), status.clone()),
                        None => map.remove("status"),
                    };
                }
                let m = meta_mut(&mut new);
                for key in [
                    "uid",
                    "creationTimestamp",
                    "deletionTimestamp",
                    "deletionGracePeriodSeconds",
                    "generation",
                ] {
                    match meta(&old).and_then(|o| o.get(key)) {
                        Some(v) => m.insert(key.to_string(), v.clone()),
                        None => m.remove(key),
                    };
                }
                new
            }
        };
        {
            let m = meta_mut(&mut object);
            match managed.or_else(|| meta(&old).and_then(|o| o.get("managedFields")).cloned()) {
                Some(mf) => m.insert("managedFields".to_string(), mf),
                None => m.remove("managedFields"),
            };
        }
        if same_content(&old, &object) {
            return Ok(old_stored);
        }
        let mut entries = fields::read_entries(&object);
        if let Some(w) = writer {
            fields::record_update(&mut entries, w, fields::changed_paths(&old, &object));
        }
        fields::prune(&mut entries, &object);
        fields::write_entries(&mut object, &entries);
        let generation = meta(&old)
            .and_then(|m| m.get("generation"))
            .and_then(Value::as_i64)
            .unwrap_or(1);
        let generation = generation + i64::from(spec_changed(ty, &old, &object));
        let rv = self.next_rv();
        let m = meta_mut(&mut object);
        m.insert("generation".to_string(), json!(generation));
        m.insert("resourceVersion".to_string(), json!(rv.to_string()));
        let key = ty.key();
        let id = (ns.to_string(), name.to_string());
        if key == CRD_KEY {
            self.register_crd(name, &object);
        }
        let finished = meta(&object).is_some_and(|m| m.contains_key("deletionTimestamp"))
            && !has_finalizers(&object);
        let object = Stored::new(&object);
        if finished {
            // The last finalizer is gone: the deletion completes.
            self.remove(ty, &id);
            self.emit(&key, EventType::Deleted, object.clone(), None);
        } else {
            self.objects
                .entry(key.clone())
                .or_default()
                .insert(id, object.clone());
            self.emit(&key, EventType::Modified, object.clone(), Some(old_stored));
        }
        Ok(object)
    }

    /// PATCH of any supported kind.
    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &mut self,
        ty: &ResourceType,
        ns: &str,
        name: &str,
        kind: PatchKind,
        body: &[u8],
        sub: Sub,
        writer: &Writer<'_>,
        force: bool,
    ) -> Result<Arc<Stored>, ApiError> {
        match kind {
            PatchKind::Apply => self.apply(ty, ns, name, body, sub, writer, force),
            PatchKind::Merge | PatchKind::Strategic => {
                let patch: Value = serde_json::from_slice(body)
                    .map_err(|e| ApiError::bad_request(format!("invalid merge patch: {e}")))?;
                if !patch.is_object() {
                    return Err(ApiError::bad_request("a merge patch must be a JSON object"));
                }
                let (_, mut target) = self.get_value(ty, ns, name)?;
                json_patch::merge(&mut target, &patch);
                self.update(ty, ns, name, target, sub, Some(writer))
            }
            PatchKind::Json => {
                let patch: json_patch::Patch = serde_json::from_slice(body)
                    .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
                let (_, mut target) = self.get_value(ty, ns, name)?;
                json_patch::patch(&mut target, &patch)
                    .map_err(|e| ApiError::invalid(format!("the JSON patch failed: {e}")))?;
                self.update(ty, ns, name, target, sub, Some(writer))
            }
        }
    }

    /// Server-side apply: creates a missing object, else merges with ownership checks.
    #[allow(clippy::too_many_arguments)]
    fn apply(
        &mut self,
        ty: &ResourceType,
        ns: &str,
        name: &str,
        body: &[u8],
        sub: Sub,
        writer: &Writer<'_>,
        force: bool,
    ) -> Result<Arc<Stored>, ApiError> {
        if writer.manager.is_empty() {
            return Err(ApiError::invalid(
                "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
            ));
        }
        let mut config: Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(_) => serde_norway::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("invalid apply patch: {e}")))?,
        };
        if !config.is_object() {
            return Err(ApiError::bad_request("an apply patch must be an object"));
        }
        for field in ["apiVersion", "kind"] {
            if config
                .get(field)
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                return Err(ApiError::bad_request(format!(
                    "{field} must be set in an apply patch"
                )));
            }
        }
        Self::check_identity(ty, ns, &mut config)?;
        match meta_str(&config, "name") {
            Some(given) if given != name => {
                return Err(ApiError::bad_request(
                    "the name of the object does not match the name on the URL",
                ));
            }
            _ => {}
        }
        if let Some(map) = config.as_object_mut() {
            match sub {
                // Only `.status` is applied through the status subresource.
                Sub::Status => map.retain(|k, _| k == "status"),
                Sub::Main if ty.status => {
                    map.remove("status");
                }
                Sub::Main => {}
            }
        }
        let writer = Writer {
            subresource: sub.name(),
            ..writer.clone()
        };
        match self.get_value(ty, ns, name) {
            Ok((_, live)) => {
                let merged = fields::apply(&live, &config, &writer, force, &ty.resource_name())?;
                self.update(ty, ns, name, merged, sub, None)
            }
            Err(e) if sub == Sub::Status => Err(e),
            Err(_) => {
                let skeleton = json!({
                    "apiVersion": ty.api_version(),
                    "kind": ty.kind,
                    "metadata": {"name": name},
                });
                let merged =
                    fields::apply(&skeleton, &config, &writer, force, &ty.resource_name())?;
                self.create(ty, ns, merged, None, false)
            }
        }
    }

    /// DELETE: with finalizers, marks the object deleted; without, removes it.
    pub fn delete(
        &mut self,
        ty: &ResourceType,
        ns: &str,
        name: &str,
        precondition_rv: Option<&str>,
    ) -> Result<Arc<Stored>, ApiError> {
        let (old_stored, old) = self.get_value(ty, ns, name)?;
        if let Some(rv) = precondition_rv
            && Some(rv) != meta_str(&old, "resourceVersion")
        {
            return Err(ApiError::stale(&ty.resource_name(), name));
        }
        let key = ty.key();
        let id = (ns.to_string(), name.to_string());
        if has_finalizers(&old) {
            if meta(&old).is_some_and(|m| m.contains_key("deletionTimestamp")) {
                return Ok(old_stored);
            }
            let mut object = old;
            let rv = self.next_rv();
            let m = meta_mut(&mut object);
            m.insert("deletionTimestamp".to_string(), json!(now()));
            m.insert("deletionGracePeriodSeconds".to_string(), json!(0));
            m.insert("resourceVersion".to_string(), json!(rv.to_string()));
            let object = Stored::new(&object);
            self.objects
                .entry(key.clone())
                .or_default()
                .insert(id, object.clone());
            self.emit(&key, EventType::Modified, object.clone(), Some(old_stored));
            return Ok(object);
        }
        let mut object = old;
        let rv = self.next_rv();
        meta_mut(&mut object).insert("resourceVersion".to_string(), json!(rv.to_string()));
        let object = Stored::new(&object);
        self.remove(ty, &id);
        self.emit(&key, EventType::Deleted, object.clone(), None);
        Ok(object)
    }

    fn remove(&mut self, ty: &ResourceType, id: &(String, String)) {
        let key = ty.key();
        if let Some(objs) = self.objects.get_mut(&key) {
            objs.remove(id);
        }
        if key == CRD_KEY {
            self.unregister_crd(&id.1);
        }
    }

    /// Test seeding: create or overwrite an object as given (status included), bypassing
    /// conflicts and subresource rules but keeping resourceVersion and events honest.
    pub fn put(&mut self, ty: &ResourceType, mut object: Value) -> Result<Arc<Stored>, ApiError> {
        let ns = if ty.namespaced {
            meta_str(&object, "namespace")
                .unwrap_or("default")
                .to_string()
        } else {
            String::new()
        };
        let name = meta_str(&object, "name")
            .ok_or_else(|| ApiError::invalid("metadata.name: Required value"))?
            .to_string();
        match self.get(ty, &ns, &name) {
            Err(_) => self.create(ty, &ns, object, None, true),
            Ok(_) => {
                meta_mut(&mut object).remove("resourceVersion");
                let status = object.get("status").cloned();
                let updated = self
                    .update(ty, &ns, &name, object, Sub::Main, None)?
                    .value();
                if !ty.status || status == updated.get("status").cloned() {
                    return self.get(ty, &ns, &name);
                }
                let mut with_status = updated;
                match status {
                    Some(s) => with_status["status"] = s,
                    None => {
                        if let Some(map) = with_status.as_object_mut() {
                            map.remove("status");
                        }
                    }
                }
                self.update(ty, &ns, &name, with_status, Sub::Status, None)
            }
        }
    }

    fn register_crd(&mut self, crd_name: &str, crd: &Value) {
        self.unregister_types(crd_name);
        let mut keys = Vec::new();
        for ty in types_from_crd(crd) {
            let key = ty.key();
            // A CRD cannot shadow a built-in type.
            if self.types.contains_key(&key) {
                continue;
            }
            self.types.insert(key.clone(), Arc::new(ty));
            keys.push(key);
        }
        self.crd_types.insert(crd_name.to_string(), keys);
    }

    fn unregister_types(&mut self, crd_name: &str) -> Vec<String> {
        let keys = self.crd_types.remove(crd_name).unwrap_or_default();
        for key in &keys {
            self.types.remove(key);
        }
        keys
    }

    /// Deleting a CRD deletes its objects, as in Kubernetes.
    fn unregister_crd(&mut self, crd_name: &str) {
        for key in self.unregister_types(crd_name) {
            self.objects.remove(&key);
            self.watchers.retain(|w| w.gvr != key);
        }
    }
}

/// The status the CRD controller would give a CRD at once: names accepted, established.
fn crd_status(crd: &Value) -> Value {
    let condition = |kind: &str, reason: &str| json!({"type": kind, "status": "True", "reason": reason, "message": "", "lastTransitionTime": now()});
    let stored: Vec<Value> = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .map(|vs| {
            vs.iter()
                .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
                .filter_map(|v| v.get("name").cloned())
                .collect()
        })
        .unwrap_or_default();
    json!({
        "conditions": [
            condition("NamesAccepted", "NoConflicts"),
            condition("Established", "InitialNamesAccepted"),
        ],
        "acceptedNames": crd.pointer("/spec/names").cloned().unwrap_or(json!({})),
        "storedVersions": stored,
    })
}

//! Where routers read their objects: a reflector store when the controller watches the
//! object's kind, the API server otherwise. Writes always go to the API server.
//!
//! A cache may lag behind a write vigil just made. Two rules keep a lagging cache from
//! feeding a guarded patch a stale object (which would fail its test operations): within one
//! reconcile, an object written through an [`ObjectApi`] is read back from the API server;
//! across reconciles, the resourceVersion each write returned is remembered in
//! [`WrittenVersions`], and a cached copy older than it is not used.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use kube::ResourceExt;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use serde::Serialize;

/// How long a remembered write is waited for: a watch that has not delivered it by then is
/// failing (and says so in `/readyz`); reads fall back to what the cache holds.
const WRITE_MEMORY: Duration = Duration::from_secs(30);

/// The resourceVersion of each object vigil wrote, until the cache has caught up with it,
/// keyed by `kind/namespace/name`.
#[derive(Debug, Clone, Default)]
pub struct WrittenVersions(Arc<Mutex<HashMap<String, (u64, Instant)>>>);

impl WrittenVersions {
    fn map(&self) -> MutexGuard<'_, HashMap<String, (u64, Instant)>> {
        // A poisoned map of versions is still a valid map of versions.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The key of an object of `kind`.
    pub fn key(kind: &str, namespace: &str, name: &str) -> String {
        format!("{kind}/{namespace}/{name}")
    }

    /// Remembers that a write of `key` returned `resource_version`. Versions that are not
    /// numbers cannot be ordered and are not remembered.
    pub fn wrote(&self, key: String, resource_version: Option<&str>) {
        if let Some(version) = resource_version.and_then(|v| v.parse::<u64>().ok()) {
            let mut map = self.map();
            map.retain(|_, (_, at)| at.elapsed() < WRITE_MEMORY);
            map.insert(key, (version, Instant::now()));
        }
    }

    /// Whether a copy of `key` at `resource_version` predates vigil's last write of it. A
    /// copy at or past the write (or one whose version is not a number) forgets the write.
    pub fn is_stale(&self, key: &str, resource_version: Option<&str>) -> bool {
        let mut map = self.map();
        let Some(&(written, at)) = map.get(key) else {
            return false;
        };
        let seen = resource_version.and_then(|v| v.parse::<u64>().ok());
        let stale = at.elapsed() < WRITE_MEMORY && seen.is_some_and(|seen| seen < written);
        if !stale {
            map.remove(key);
        }
        stale
    }
}

/// A router's objects of one kind in one namespace: read from `cache` when the controller
/// watches them, written through `api`.
#[derive(Clone)]
pub struct ObjectApi {
    api: Api<DynamicObject>,
    cache: Option<ObjectCache>,
    /// Objects written through this value: read from the API server from then on.
    written: Arc<Mutex<HashSet<String>>>,
}

/// The watched copies of one kind, and the writes they must have caught up with.
#[derive(Clone)]
pub struct ObjectCache {
    /// The reflector store of the kind (every namespace in scope).
    pub store: Store<DynamicObject>,
    /// The kind's resource (its `kind` as in [`WrittenVersions::key`]).
    pub resource: ApiResource,
    /// vigil's recent writes.
    pub written: WrittenVersions,
}

impl From<Api<DynamicObject>> for ObjectApi {
    fn from(api: Api<DynamicObject>) -> ObjectApi {
        ObjectApi {
            api,
            cache: None,
            written: Arc::default(),
        }
    }
}

impl ObjectApi {
    /// Objects of `api`, read from `cache` when given.
    pub fn new(api: Api<DynamicObject>, cache: Option<ObjectCache>) -> ObjectApi {
        ObjectApi {
            cache,
            ..ObjectApi::from(api)
        }
    }

    fn namespace(&self) -> &str {
        self.api.namespace().unwrap_or_default()
    }

    fn written_here(&self) -> MutexGuard<'_, HashSet<String>> {
        self.written
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The cached copy of `name` when the cache can answer for it: `Some(None)` when the
    /// cache knows it does not exist, `None` when the API server must be asked.
    fn cached(&self, name: &str) -> Option<Option<DynamicObject>> {
        let cache = self.cache.as_ref()?;
        if self.written_here().contains(name) {
            return None;
        }
        let namespace = self.namespace().to_owned();
        let key = WrittenVersions::key(&cache.resource.kind, &namespace, name);
        let found = cache
            .store
            .get(&ObjectRef::new_with(name, cache.resource.clone()).within(&namespace));
        let version = found.as_ref().and_then(|o| o.resource_version());
        if cache.written.is_stale(&key, version.as_deref()) {
            return None;
        }
        Some(found.map(Arc::unwrap_or_clone))
    }

    /// The object `name`; a 404 error when it does not exist.
    pub async fn get(&self, name: &str) -> kube::Result<DynamicObject> {
        match self.cached(name) {
            Some(Some(object)) => Ok(object),
            Some(None) => Err(not_found(self.cache.as_ref().map(|c| &c.resource), name)),
            None => self.api.get(name).await,
        }
    }

    /// The object `name`, `None` when it does not exist.
    pub async fn get_opt(&self, name: &str) -> kube::Result<Option<DynamicObject>> {
        match self.cached(name) {
            Some(found) => Ok(found),
            None => self.api.get_opt(name).await,
        }
    }

    fn remember(&self, name: &str, written: Option<&DynamicObject>) {
        self.written_here().insert(name.to_owned());
        if let (Some(cache), Some(object)) = (&self.cache, written) {
            let key = WrittenVersions::key(&cache.resource.kind, self.namespace(), name);
            cache
                .written
                .wrote(key, object.resource_version().as_deref());
        }
    }

    /// Patches `name` (see [`Api::patch`]).
    pub async fn patch<P: Serialize + std::fmt::Debug>(
        &self,
        name: &str,
        params: &PatchParams,
        patch: &Patch<P>,
    ) -> kube::Result<DynamicObject> {
        let result = self.api.patch(name, params, patch).await;
        self.remember(name, result.as_ref().ok());
        result
    }

    /// Creates `object` (see [`Api::create`]).
    pub async fn create(
        &self,
        params: &PostParams,
        object: &DynamicObject,
    ) -> kube::Result<DynamicObject> {
        let result = self.api.create(params, object).await;
        self.remember(&object.name_any(), result.as_ref().ok());
        result
    }

    /// Deletes `name` (see [`Api::delete`]).
    pub async fn delete(&self, name: &str, params: &DeleteParams) -> kube::Result<()> {
        let result = self.api.delete(name, params).await;
        self.remember(name, None);
        result.map(|_| ())
    }
}

/// The error the API server answers for an object that does not exist.
fn not_found(resource: Option<&ApiResource>, name: &str) -> kube::Error {
    let plural = resource.map_or("objects", |r| r.plural.as_str());
    kube::Error::Api(Box::new(kube::core::response::Status {
        status: Some(kube::core::response::StatusSummary::Failure),
        code: 404,
        message: format!("{plural} \"{name}\" not found"),
        reason: "NotFound".to_owned(),
        ..kube::core::response::Status::default()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_older_than_the_last_write_is_stale_until_the_cache_catches_up() {
        let written = WrittenVersions::default();
        let key = WrittenVersions::key("HTTPRoute", "shop", "web");
        assert!(!written.is_stale(&key, Some("5")), "nothing written yet");
        written.wrote(key.clone(), Some("9"));
        assert!(written.is_stale(&key, Some("8")));
        assert!(!written.is_stale(&key, Some("9")), "caught up");
        assert!(
            !written.is_stale(&key, Some("8")),
            "forgotten once caught up"
        );
        written.wrote(key.clone(), Some("not-a-number"));
        assert!(
            !written.is_stale(&key, Some("1")),
            "opaque versions are not ordered"
        );
    }
}

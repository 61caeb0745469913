//! The ReplicaSet as the cache holds it: the fields vigil reads, decoded straight from the
//! API server's JSON. k8s-openapi's `ReplicaSet` is ~2.3 KiB inline whatever it holds (its
//! spec embeds a whole pod template), and every Rollout keeps one to eleven ReplicaSets
//! (`revisionHistoryLimit`, 10 by default); this type is under a third of that. A reconcile
//! converts what it reads back into a `ReplicaSet` (template and selector absent), so
//! everything downstream reads one type.

use std::borrow::Cow;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetSpec, ReplicaSetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use serde::Deserialize;

use super::cache::{keep_only_annotation, trim_meta};
use super::revision_settings::POD_METADATA_ANNOTATION;

/// An `apps/v1` ReplicaSet with only what vigil reads: metadata (labels, owners, the role
/// metadata record), `spec.replicas`, `spec.minReadySeconds` and the status counts. Fields
/// the API server sends beyond these are skipped while decoding.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct CachedReplicaSet {
    /// The object's metadata (trimmed by [`trim`]; field ownership skipped while decoding).
    #[serde(default, deserialize_with = "super::lean_meta::deserialize")]
    pub metadata: ObjectMeta,
    /// `spec.replicas` and `spec.minReadySeconds`.
    #[serde(default)]
    pub spec: Option<CachedReplicaSetSpec>,
    /// The ReplicaSet controller's counts (conditions dropped by [`trim`]).
    #[serde(default)]
    pub status: Option<ReplicaSetStatus>,
}

/// The part of a ReplicaSet's spec vigil reads.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CachedReplicaSetSpec {
    /// Desired pods.
    #[serde(default)]
    pub replicas: Option<i32>,
    /// Seconds a ready pod waits before it counts as available.
    #[serde(default)]
    pub min_ready_seconds: Option<i32>,
}

impl Resource for CachedReplicaSet {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("ReplicaSet")
    }

    fn group(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("apps")
    }

    fn version(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("v1")
    }

    fn plural(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("replicasets")
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// Drops what no reader uses: field ownership, every annotation but the record of the role
/// metadata vigil put on the pods (what a role change takes off), and the status conditions.
pub fn trim(replica_set: &mut CachedReplicaSet) {
    trim_meta(&mut replica_set.metadata);
    keep_only_annotation(&mut replica_set.metadata, POD_METADATA_ANNOTATION);
    if let Some(status) = replica_set.status.as_mut() {
        status.conditions = None;
    }
}

impl From<ReplicaSet> for CachedReplicaSet {
    /// What the watch would cache of `replica_set` (trimmed).
    fn from(replica_set: ReplicaSet) -> CachedReplicaSet {
        let mut cached = CachedReplicaSet {
            metadata: replica_set.metadata,
            spec: replica_set.spec.map(|spec| CachedReplicaSetSpec {
                replicas: spec.replicas,
                min_ready_seconds: spec.min_ready_seconds,
            }),
            status: replica_set.status,
        };
        trim(&mut cached);
        cached
    }
}

impl From<CachedReplicaSet> for ReplicaSet {
    /// The ReplicaSet a reconcile reads: no pod template, an empty selector.
    fn from(cached: CachedReplicaSet) -> ReplicaSet {
        ReplicaSet {
            metadata: cached.metadata,
            spec: cached.spec.map(|spec| ReplicaSetSpec {
                replicas: spec.replicas,
                min_ready_seconds: spec.min_ready_seconds,
                ..ReplicaSetSpec::default()
            }),
            status: cached.status,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::platform::kubernetes::context::ROLLOUT_LABEL;

    /// A ReplicaSet as the API server sends it.
    fn served() -> serde_json::Value {
        json!({
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": "web-a", "namespace": "shop",
                         "labels": {ROLLOUT_LABEL: "web"},
                         "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}",
                                         POD_METADATA_ANNOTATION: "{\"labels\":{\"role\":\"canary\"}}"},
                         "managedFields": [{"manager": "kubectl"}],
                         "ownerReferences": [{"apiVersion": "vigil.dev/v1alpha1", "kind": "Rollout",
                                              "name": "web", "uid": "u1", "controller": true}]},
            "spec": {"replicas": 2, "minReadySeconds": 5,
                     "selector": {"matchLabels": {"app": "web"}},
                     "template": {"spec": {"containers": [{"name": "app", "image": "app:1"}]}}},
            "status": {"replicas": 2, "readyReplicas": 1, "availableReplicas": 1,
                       "conditions": [{"type": "ReplicaFailure", "status": "True"}]}
        })
    }

    #[test]
    fn decoding_keeps_what_vigil_reads_and_skips_the_rest() {
        let mut cached: CachedReplicaSet = serde_json::from_value(served()).expect("decodes");
        trim(&mut cached);
        assert!(cached.metadata.managed_fields.is_none());
        assert_eq!(
            cached.metadata.annotations,
            Some(
                [(
                    POD_METADATA_ANNOTATION.to_owned(),
                    "{\"labels\":{\"role\":\"canary\"}}".to_owned()
                )]
                .into()
            )
        );
        assert_eq!(
            cached.metadata.labels.as_ref().expect("labels")[ROLLOUT_LABEL],
            "web"
        );
        assert_eq!(
            cached.metadata.owner_references.as_ref().map(Vec::len),
            Some(1)
        );
        assert_eq!(
            cached.spec,
            Some(CachedReplicaSetSpec {
                replicas: Some(2),
                min_ready_seconds: Some(5)
            })
        );
        let status = cached.status.clone().expect("status");
        assert_eq!(
            (status.ready_replicas, status.available_replicas),
            (Some(1), Some(1))
        );
        assert!(status.conditions.is_none());
    }

    #[test]
    fn converting_a_full_replica_set_is_the_same_as_decoding_it() {
        let full: ReplicaSet = serde_json::from_value(served()).expect("decodes");
        let mut decoded: CachedReplicaSet = serde_json::from_value(served()).expect("decodes");
        trim(&mut decoded);
        assert_eq!(CachedReplicaSet::from(full), decoded);
    }

    #[test]
    fn a_reconcile_reads_it_back_as_a_replica_set_without_template_or_selector() {
        let cached: CachedReplicaSet = serde_json::from_value(served()).expect("decodes");
        let read = ReplicaSet::from(cached);
        let spec = read.spec.expect("spec");
        assert_eq!((spec.replicas, spec.min_ready_seconds), (Some(2), Some(5)));
        assert!(spec.template.is_none());
        assert_eq!(spec.selector, Default::default());
        assert_eq!(read.metadata.name.as_deref(), Some("web-a"));
        assert_eq!(read.status.and_then(|s| s.ready_replicas), Some(1));
    }

    #[test]
    fn it_is_a_fraction_of_the_full_type() {
        // Why this type exists: the cache pays the inline size for every ReplicaSet.
        assert!(
            std::mem::size_of::<CachedReplicaSet>() * 3 < std::mem::size_of::<ReplicaSet>(),
            "{} vs {}",
            std::mem::size_of::<CachedReplicaSet>(),
            std::mem::size_of::<ReplicaSet>()
        );
    }

    #[test]
    fn it_is_watched_as_apps_v1_replicasets() {
        assert_eq!(CachedReplicaSet::api_version(&()), "apps/v1");
        assert_eq!(
            CachedReplicaSet::url_path(&(), Some("shop")),
            "/apis/apps/v1/namespaces/shop/replicasets"
        );
    }
}

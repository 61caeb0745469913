//! A revision's settings on its ReplicaSet and pods (pure): the role's labels and annotations
//! (`canaryMetadata` / `stableMetadata`) and `minReadySeconds`.
//!
//! What vigil put on a revision is recorded in the ReplicaSet's [`POD_METADATA_ANNOTATION`],
//! so a role change (promotion) takes off exactly the keys the previous role added and never
//! a label or annotation of the user's own template.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{Map, Value, json};

use crate::api::PodMetadata;
use crate::rollout::scaling::RevisionSettings;

/// Annotation of a ReplicaSet: the role metadata vigil put on its pods, as JSON.
pub const POD_METADATA_ANNOTATION: &str = "vigil.dev/pod-metadata";

/// What vigil last set on `replica_set`: its recorded role metadata (none when the annotation
/// is absent or unreadable, so the next decision sets it again) and `minReadySeconds`.
pub fn settings_of(replica_set: &ReplicaSet) -> RevisionSettings {
    let pod_metadata = replica_set
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(POD_METADATA_ANNOTATION))
        .and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or_default();
    RevisionSettings {
        pod_metadata,
        min_ready_seconds: replica_set
            .spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0),
    }
}

/// `replica_set`, about to be created, with `settings`: the role metadata on its pod template
/// (the template's own keys win, which validation makes sure never clash), recorded in its
/// annotation, and `minReadySeconds`.
pub fn apply_to_new(replica_set: &mut ReplicaSet, settings: &RevisionSettings) {
    let Some(spec) = replica_set.spec.as_mut() else {
        return;
    };
    spec.min_ready_seconds = (settings.min_ready_seconds > 0).then_some(settings.min_ready_seconds);
    let metadata = &settings.pod_metadata;
    if metadata.is_empty() {
        return;
    }
    let template_meta = spec
        .template
        .get_or_insert_with(Default::default)
        .metadata
        .get_or_insert_with(ObjectMeta::default);
    add_missing(&mut template_meta.labels, &metadata.labels);
    add_missing(&mut template_meta.annotations, &metadata.annotations);
    replica_set
        .metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(POD_METADATA_ANNOTATION.to_owned(), record(metadata));
}

fn add_missing(into: &mut Option<BTreeMap<String, String>>, from: &BTreeMap<String, String>) {
    let into = into.get_or_insert_with(BTreeMap::new);
    for (key, value) in from {
        into.entry(key.clone()).or_insert_with(|| value.clone());
    }
}

fn record(metadata: &PodMetadata) -> String {
    serde_json::to_string(metadata).unwrap_or_default()
}

/// The merge patch of one map: `wanted`'s entries, and `null` for the keys of `previous` that
/// `wanted` drops.
fn map_patch(previous: &BTreeMap<String, String>, wanted: &BTreeMap<String, String>) -> Value {
    let mut patch: Map<String, Value> = previous
        .keys()
        .filter(|key| !wanted.contains_key(*key))
        .map(|key| (key.clone(), Value::Null))
        .collect();
    for (key, value) in wanted {
        patch.insert(key.clone(), Value::String(value.clone()));
    }
    Value::Object(patch)
}

/// The merge patch of a pod's (or a pod template's) metadata from the role metadata
/// `previous` to `wanted`.
pub fn metadata_patch(previous: &PodMetadata, wanted: &PodMetadata) -> Value {
    json!({
        "labels": map_patch(&previous.labels, &wanted.labels),
        "annotations": map_patch(&previous.annotations, &wanted.annotations),
    })
}

/// The merge patch of a ReplicaSet from the settings `previous` (as [`settings_of`] read
/// them) to `wanted`: pod template metadata, its record, and `minReadySeconds`.
pub fn replica_set_patch(previous: &RevisionSettings, wanted: &RevisionSettings) -> Value {
    json!({
        "metadata": {"annotations": {POD_METADATA_ANNOTATION: record(&wanted.pod_metadata)}},
        "spec": {
            "minReadySeconds": wanted.min_ready_seconds,
            "template": {"metadata": metadata_patch(&previous.pod_metadata, &wanted.pod_metadata)},
        },
    })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::ReplicaSetSpec;
    use k8s_openapi::api::core::v1::PodTemplateSpec;

    use super::*;

    fn metadata(labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> PodMetadata {
        let map = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        PodMetadata {
            labels: map(labels),
            annotations: map(annotations),
        }
    }

    #[test]
    fn a_role_change_replaces_the_previous_roles_keys_only() {
        let canary = metadata(&[("role", "canary"), ("tier", "web")], &[("note", "new")]);
        let stable = metadata(&[("role", "stable")], &[]);
        assert_eq!(
            metadata_patch(&canary, &stable),
            json!({
                "labels": {"role": "stable", "tier": null},
                "annotations": {"note": null},
            })
        );
        assert_eq!(
            metadata_patch(&PodMetadata::default(), &PodMetadata::default()),
            json!({"labels": {}, "annotations": {}})
        );
    }

    #[test]
    fn a_new_replica_set_carries_the_settings_and_reads_them_back() {
        let mut replica_set = ReplicaSet {
            spec: Some(ReplicaSetSpec {
                template: Some(PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some([("app".to_owned(), "web".to_owned())].into()),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(settings_of(&replica_set), RevisionSettings::default());
        let settings = RevisionSettings {
            pod_metadata: metadata(&[("role", "canary"), ("app", "other")], &[("a", "b")]),
            min_ready_seconds: 10,
        };
        apply_to_new(&mut replica_set, &settings);
        let spec = replica_set.spec.as_ref().expect("spec");
        assert_eq!(spec.min_ready_seconds, Some(10));
        let template = spec
            .template
            .as_ref()
            .and_then(|t| t.metadata.as_ref())
            .expect("template metadata");
        let labels = template.labels.as_ref().expect("labels");
        assert_eq!(labels.get("role").map(String::as_str), Some("canary"));
        assert_eq!(
            labels.get("app").map(String::as_str),
            Some("web"),
            "the template's own label wins"
        );
        assert_eq!(settings_of(&replica_set), settings);
    }

    #[test]
    fn an_unreadable_record_reads_as_nothing_set() {
        let replica_set = ReplicaSet {
            metadata: ObjectMeta {
                annotations: Some(
                    [(POD_METADATA_ANNOTATION.to_owned(), "{not json".to_owned())].into(),
                ),
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(settings_of(&replica_set), RevisionSettings::default());
    }
}

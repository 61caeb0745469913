//! The pod template of a cached Rollout, kept as compact JSON.
//!
//! As a Rust value a pod template is large: every optional field of `PodSpec` and `Container`
//! takes its place, and each label map takes a whole B-tree node, so ~3 KiB of heap for a
//! one-container template whose JSON is ~150 bytes. The Rollout store holds every Rollout for
//! as long as the controller runs, and a reconcile needs the template only while it runs: the
//! watch stores it as JSON in an annotation of the cached copy only ([`pack`]), and a
//! reconcile restores it before reading the Rollout ([`unpack`]). Nothing else reads the
//! template from the store (the templates' watch maps by analysis references).

use std::sync::Arc;

use crate::api::Rollout;

/// Where the cached copy of a Rollout keeps its pod template. Never read from the API
/// server: [`pack`] drops one a user set before storing the real template there.
pub const CACHED_TEMPLATE_ANNOTATION: &str = "vigil.dev/cached-pod-template";

/// Moves `spec.template` into [`CACHED_TEMPLATE_ANNOTATION`] as JSON (the watch's step before
/// the store).
pub fn pack(rollout: &mut Rollout) {
    if let Some(annotations) = rollout.metadata.annotations.as_mut() {
        annotations.remove(CACHED_TEMPLATE_ANNOTATION);
    }
    let Some(template) = rollout.spec.template.take() else {
        return;
    };
    match serde_json::to_string(&template) {
        Ok(json) => {
            rollout
                .metadata
                .annotations
                .get_or_insert_default()
                .insert(CACHED_TEMPLATE_ANNOTATION.to_owned(), json);
        }
        // Serializing a k8s-openapi struct cannot fail; keep the value if it ever does.
        Err(_) => rollout.spec.template = Some(template),
    }
}

/// The Rollout as the API server has it: a [`pack`]ed copy with its template back (and the
/// annotation gone); any other Rollout as it is.
pub fn unpack(rollout: Arc<Rollout>) -> Arc<Rollout> {
    if !rollout
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|annotations| annotations.contains_key(CACHED_TEMPLATE_ANNOTATION))
    {
        return rollout;
    }
    let mut rollout = Arc::unwrap_or_clone(rollout);
    let annotations = rollout.metadata.annotations.get_or_insert_default();
    let json = annotations
        .remove(CACHED_TEMPLATE_ANNOTATION)
        .unwrap_or_default();
    if annotations.is_empty() {
        rollout.metadata.annotations = None;
    }
    // It was serialized from a template by `pack`: it parses back.
    rollout.spec.template = serde_json::from_str(&json).ok();
    Arc::new(rollout)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn rollout(annotations: serde_json::Value) -> Rollout {
        serde_json::from_value(json!({
            "apiVersion": "vigil.dev/v1alpha1", "kind": "Rollout",
            "metadata": {"name": "web", "namespace": "shop", "annotations": annotations},
            "spec": {
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}, "annotations": {"a": "b"}},
                    "spec": {"containers": [{
                        "name": "app", "image": "app:1",
                        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
                        "env": [{"name": "MODE", "value": "fast"}]
                    }]}
                },
                "strategy": {"canary": {"steps": [{"setWeight": 50}]}}
            }
        }))
        .expect("rollout")
    }

    #[test]
    fn a_packed_rollout_unpacks_to_the_original_with_the_same_revision() {
        for annotations in [
            json!(null),
            json!({"notifications.vigil.dev/on-degraded": "x"}),
        ] {
            let original = rollout(annotations);
            let mut cached = original.clone();
            pack(&mut cached);
            assert!(cached.spec.template.is_none());
            assert!(
                cached.metadata.annotations.as_ref().expect("annotations")
                    [CACHED_TEMPLATE_ANNOTATION]
                    .contains("app:1")
            );
            let restored = unpack(Arc::new(cached));
            assert_eq!(restored.spec, original.spec);
            assert_eq!(restored.metadata, original.metadata);
            let template = restored.spec.template.as_ref().expect("template");
            assert_eq!(
                crate::rollout::template_hash(template),
                crate::rollout::template_hash(original.spec.template.as_ref().expect("template"))
            );
        }
    }

    #[test]
    fn an_annotation_a_user_set_never_becomes_the_template() {
        let forged = json!({CACHED_TEMPLATE_ANNOTATION: r#"{"spec":{"containers":[{"name":"x","image":"evil:1"}]}}"#});
        // With a template of its own: the real one is cached.
        let mut with_template = rollout(forged.clone());
        pack(&mut with_template);
        let restored = unpack(Arc::new(with_template));
        let template = serde_json::to_string(&restored.spec.template).expect("json");
        assert!(
            template.contains("app:1") && !template.contains("evil"),
            "{template}"
        );
        // Without one (a workloadRef Rollout): no template at all.
        let mut without = rollout(forged);
        without.spec.template = None;
        pack(&mut without);
        assert!(
            without
                .metadata
                .annotations
                .expect("annotations")
                .is_empty()
        );
    }

    #[test]
    fn a_rollout_that_was_not_packed_is_left_alone() {
        let original = Arc::new(rollout(json!(null)));
        let same = unpack(original.clone());
        assert!(Arc::ptr_eq(&original, &same));
    }
}

//! What `vigil lint` checks of notifications: the configuration file of `vigil run
//! --notifications` (a YAML map with `sinks` and `subscriptions`, no `apiVersion`), the
//! ConfigMap `vigil-notifications` holding it under `notifications.yaml`, and the
//! `notifications.vigil.dev/<trigger>` annotations of a Rollout.

use serde_norway::Value;

use super::config::{
    ANNOTATION_PREFIX, CONFIG_MAP_KEY, CONFIG_MAP_NAME, NotificationsConfig, Platform, Trigger,
    sink_name_problem,
};
use crate::analysis::template::Problem;

/// The problems of `document` when it is a notifications configuration or its ConfigMap;
/// `None` for any other document.
pub fn lint_document(document: &Value) -> Option<Vec<Problem>> {
    let has = |key: &str| document.get(key).is_some();
    if !has("apiVersion") && !has("kind") && (has("sinks") || has("subscriptions")) {
        return Some(lint_config(document, Platform::Any, ""));
    }
    let is_config_map = document.get("apiVersion").and_then(Value::as_str) == Some("v1")
        && document.get("kind").and_then(Value::as_str) == Some("ConfigMap")
        && document
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str)
            == Some(CONFIG_MAP_NAME);
    if !is_config_map {
        return None;
    }
    let path = format!("data.{CONFIG_MAP_KEY}");
    let text = document.get("data").and_then(|d| d.get(CONFIG_MAP_KEY));
    Some(match text.and_then(Value::as_str) {
        None => vec![Problem {
            path,
            message: "missing: the controller reads its notifications configuration here".into(),
        }],
        Some(text) => match serde_norway::from_str::<Value>(text) {
            Ok(config) => lint_config(&config, Platform::Kubernetes, &format!("{path}: ")),
            Err(error) => vec![Problem {
                path,
                message: format!("not YAML: {error}"),
            }],
        },
    })
}

fn lint_config(config: &Value, platform: Platform, prefix: &str) -> Vec<Problem> {
    match serde_norway::from_value::<NotificationsConfig>(config.clone()) {
        Ok(config) => config
            .validate(platform)
            .into_iter()
            .map(|p| Problem {
                path: format!("{prefix}{}", p.path),
                message: p.message,
            })
            .collect(),
        Err(error) => vec![Problem {
            path: prefix.trim_end_matches(": ").to_owned(),
            message: error.to_string(),
        }],
    }
}

/// The problems of a Rollout's `notifications.vigil.dev/*` annotations: an unknown trigger,
/// or a value that is not a comma-separated list of sink names (a URL among them).
pub fn rollout_annotations(metadata: Option<&Value>) -> Vec<Problem> {
    let Some(Value::Mapping(annotations)) = metadata.and_then(|m| m.get("annotations")) else {
        return Vec::new();
    };
    let mut problems = Vec::new();
    for (key, value) in annotations {
        let Some(key) = key.as_str() else { continue };
        let Some(trigger) = key.strip_prefix(ANNOTATION_PREFIX) else {
            continue;
        };
        let path = format!("metadata.annotations[{key}]");
        if Trigger::from_name(trigger).is_none() {
            let names: Vec<&str> = Trigger::ALL.iter().map(|t| t.name()).collect();
            problems.push(Problem {
                path: path.clone(),
                message: format!(
                    "`{trigger}` is not a trigger; expected one of {}",
                    names.join(", ")
                ),
            });
        }
        let value = value.as_str().unwrap_or_default();
        for name in value.split(',').map(str::trim) {
            if let Some(message) = sink_name_problem(name) {
                problems.push(Problem {
                    path: path.clone(),
                    message: format!("{message} (annotations name sinks of the controller's configuration, never URLs)"),
                });
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lint(text: &str) -> Option<Vec<String>> {
        let document: Value = serde_norway::from_str(text).expect("yaml");
        lint_document(&document).map(|problems| {
            problems
                .iter()
                .map(|p| format!("{}: {}", p.path, p.message))
                .collect()
        })
    }

    #[test]
    fn other_documents_are_not_notifications() {
        assert_eq!(
            lint("apiVersion: v1\nkind: Service\nmetadata: {name: x}"),
            None
        );
        assert_eq!(
            lint("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: other}"),
            None
        );
    }

    #[test]
    fn a_file_is_checked_field_by_field() {
        let ok =
            "sinks: [{name: a, type: slack, urlFrom: {env: A}}]\nsubscriptions: {on-promoted: [a]}";
        assert_eq!(lint(ok), Some(vec![]));
        let found =
            lint("sinks: [{name: a, type: slack, urlFrom: {env: A}, url: x}]").expect("lint");
        assert!(found[0].contains("unknown field `url`"), "{found:?}");
        let found = lint("sinks: []\nsubscriptions: {on-promoted: [b]}").expect("lint");
        assert_eq!(
            found,
            vec!["subscriptions.on-promoted[0]: no sink is named `b`"]
        );
    }

    #[test]
    fn the_configmap_is_checked_for_the_controller() {
        let text = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: vigil-notifications, namespace: vigil-system}
data:
  notifications.yaml: |
    sinks: [{name: a, type: webhook, urlFrom: {file: /url}}]
"#;
        let found = lint(text).expect("lint");
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with("data.notifications.yaml: sinks[0].urlFrom: the controller reads URLs from Secrets only"),
            "{found:?}"
        );
        let missing =
            lint("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: vigil-notifications}")
                .expect("lint");
        assert!(
            missing[0].starts_with("data.notifications.yaml: missing"),
            "{missing:?}"
        );
    }

    #[test]
    fn rollout_annotations_name_triggers_and_sinks_only() {
        let metadata: Value = serde_norway::from_str(
            r#"
name: web
annotations:
  notifications.vigil.dev/on-rolled-back: "team-slack, audit"
  notifications.vigil.dev/on-fire: audit
  notifications.vigil.dev/on-paused: "https://hooks.slack.com/services/T0/B0/x"
"#,
        )
        .expect("yaml");
        let found = rollout_annotations(Some(&metadata));
        let paths: Vec<&str> = found.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            vec![
                "metadata.annotations[notifications.vigil.dev/on-fire]",
                "metadata.annotations[notifications.vigil.dev/on-paused]",
            ],
            "{found:?}"
        );
        assert!(found[1].message.contains("never URLs"), "{found:?}");
    }
}

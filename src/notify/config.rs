//! The notifications configuration: the sinks (where to send, the URL by reference only) and
//! the default subscriptions (which trigger goes to which sinks). The same YAML is the
//! `notifications.yaml` key of the ConfigMap `vigil-notifications` in the controller's
//! namespace and the file of `vigil run --notifications FILE`.
//!
//! ```yaml
//! sinks:
//!   - name: team-slack
//!     type: slack
//!     urlFrom:
//!       secretKeyRef: { name: vigil-notifications, key: slack-url }
//! subscriptions:
//!   on-rolled-back: [team-slack]
//! ```
//!
//! Rollouts add subscriptions by annotation, naming sinks only
//! (`notifications.vigil.dev/on-rolled-back: team-slack`): a Rollout writer never supplies
//! a URL.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::analysis::template::Problem;

/// The ConfigMap the controller reads its configuration from (in its own namespace).
pub const CONFIG_MAP_NAME: &str = "vigil-notifications";
/// The ConfigMap's key holding the YAML.
pub const CONFIG_MAP_KEY: &str = "notifications.yaml";
/// The annotation prefix of a Rollout's subscriptions: `notifications.vigil.dev/<trigger>`.
pub const ANNOTATION_PREFIX: &str = "notifications.vigil.dev/";
/// Sinks in one configuration, at most.
pub const MAX_SINKS: usize = 32;
/// Length of a sink's name, at most (it labels metrics).
pub const MAX_SINK_NAME_LEN: usize = 63;
/// Bytes of the configuration, at most.
pub const MAX_CONFIG_BYTES: usize = 64 * 1024;

/// When a notification is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Trigger {
    /// A canary started (a new pod template, or a retry), or a first version was deployed.
    OnStarted,
    /// A step of the canary completed.
    OnStepCompleted,
    /// The rollout paused: a pause step, `spec.paused`, or an inconclusive analysis.
    OnPaused,
    /// The canary was promoted to stable.
    OnPromoted,
    /// The canary was rolled back: a failed analysis or `vigil abort`.
    OnRolledBack,
    /// A step did not converge within `progressDeadlineSeconds`: rolled back.
    OnProgressDeadline,
}

impl Trigger {
    /// Every trigger.
    pub const ALL: [Trigger; 6] = [
        Trigger::OnStarted,
        Trigger::OnStepCompleted,
        Trigger::OnPaused,
        Trigger::OnPromoted,
        Trigger::OnRolledBack,
        Trigger::OnProgressDeadline,
    ];

    /// The trigger's name, e.g. `on-rolled-back`.
    pub fn name(self) -> &'static str {
        match self {
            Trigger::OnStarted => "on-started",
            Trigger::OnStepCompleted => "on-step-completed",
            Trigger::OnPaused => "on-paused",
            Trigger::OnPromoted => "on-promoted",
            Trigger::OnRolledBack => "on-rolled-back",
            Trigger::OnProgressDeadline => "on-progress-deadline",
        }
    }

    /// The trigger named `name`.
    pub fn from_name(name: &str) -> Option<Trigger> {
        Trigger::ALL.into_iter().find(|t| t.name() == name)
    }
}

/// The whole configuration.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NotificationsConfig {
    /// Where notifications go.
    #[serde(default)]
    pub sinks: Vec<SinkConfig>,
    /// Which sinks hear each trigger, for every Rollout (annotations add more).
    #[serde(default)]
    pub subscriptions: BTreeMap<Trigger, Vec<String>>,
}

/// One destination.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SinkConfig {
    /// The name subscriptions use; labels the metrics.
    pub name: String,
    /// `webhook` (a JSON document) or `slack` (a Slack-compatible incoming webhook).
    #[serde(rename = "type")]
    pub kind: SinkKind,
    /// Where the URL is read from: it is a secret.
    pub url_from: UrlFrom,
}

/// What a sink receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkKind {
    /// A generic JSON POST with every field of the event.
    Webhook,
    /// `{"text": ..., "blocks": [...]}`: Slack, Mattermost, Teams (via a workflow).
    Slack,
}

/// Where a sink's URL comes from. Exactly one field: `secretKeyRef` on Kubernetes, `file` or
/// `env` with `vigil run`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UrlFrom {
    /// A key of a Secret in the controller's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<SecretKeyRef>,
    /// A file holding the URL (`vigil run` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// An environment variable holding the URL (`vigil run` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
}

/// A key of a Secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretKeyRef {
    /// The Secret's name.
    pub name: String,
    /// The key in its `data`.
    pub key: String,
}

/// Where the configuration is used: which `urlFrom` sources it may name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Platform {
    /// The controller: `secretKeyRef` only.
    Kubernetes,
    /// `vigil run`: `file` or `env`.
    Local,
    /// `vigil lint`: any one source.
    Any,
}

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Larger than [`MAX_CONFIG_BYTES`].
    #[error(
        "the notifications configuration has {bytes} bytes, more than the {MAX_CONFIG_BYTES} allowed"
    )]
    ReadTooLarge {
        /// Its size.
        bytes: usize,
    },
    /// Not YAML of the expected shape (serde names the field).
    #[error("the notifications configuration does not parse: {0}")]
    Parse(String),
    /// Parsed, but breaks the rules.
    #[error("the notifications configuration is invalid: {}", describe(.0))]
    Validate(Vec<Problem>),
}

fn describe(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("{}: {}", p.path, p.message))
        .collect::<Vec<_>>()
        .join("; ")
}

impl NotificationsConfig {
    /// Parses and validates `text` for `platform`.
    pub fn parse(text: &str, platform: Platform) -> Result<NotificationsConfig, ConfigError> {
        if text.len() > MAX_CONFIG_BYTES {
            return Err(ConfigError::ReadTooLarge { bytes: text.len() });
        }
        let config: NotificationsConfig = if text.trim().is_empty() {
            NotificationsConfig::default()
        } else {
            serde_norway::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?
        };
        let problems = config.validate(platform);
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Validate(problems))
        }
    }

    /// Every rule broken, each at its field.
    pub fn validate(&self, platform: Platform) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut at = |path: String, message: String| problems.push(Problem { path, message });
        if self.sinks.len() > MAX_SINKS {
            at(
                "sinks".into(),
                format!("{} sinks, at most {MAX_SINKS}", self.sinks.len()),
            );
        }
        for (i, sink) in self.sinks.iter().enumerate() {
            if let Some(message) = sink_name_problem(&sink.name) {
                at(format!("sinks[{i}].name"), message);
            }
            if self.sinks[..i].iter().any(|s| s.name == sink.name) {
                at(
                    format!("sinks[{i}].name"),
                    format!("`{}` names another sink too", sink.name),
                );
            }
            if let Some((field, message)) = url_from_problem(&sink.url_from, platform) {
                at(format!("sinks[{i}].urlFrom{field}"), message);
            }
        }
        for (trigger, sinks) in &self.subscriptions {
            for (j, name) in sinks.iter().enumerate() {
                if !self.sinks.iter().any(|s| &s.name == name) {
                    at(
                        format!("subscriptions.{}[{j}]", trigger.name()),
                        format!("no sink is named `{name}`"),
                    );
                }
            }
        }
        problems
    }
}

/// What is wrong with a sink's name (a lowercase DNS label: it labels metrics and is
/// written in annotations).
pub fn sink_name_problem(name: &str) -> Option<String> {
    let valid = !name.is_empty()
        && name.len() <= MAX_SINK_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    (!valid).then(|| {
        format!(
            "`{name}` is not a sink name: lowercase letters, digits and `-`, at most {MAX_SINK_NAME_LEN} characters"
        )
    })
}

fn url_from_problem(from: &UrlFrom, platform: Platform) -> Option<(&'static str, String)> {
    let given = [
        from.secret_key_ref.is_some(),
        from.file.is_some(),
        from.env.is_some(),
    ];
    let count = given.iter().filter(|g| **g).count();
    if count != 1 {
        return Some((
            "",
            format!("exactly one of secretKeyRef, file, env is needed, found {count}"),
        ));
    }
    match platform {
        Platform::Kubernetes if from.secret_key_ref.is_none() => Some((
            "",
            "the controller reads URLs from Secrets only: use secretKeyRef (file and env are for vigil run)".into(),
        )),
        Platform::Local if from.secret_key_ref.is_some() => Some((
            ".secretKeyRef",
            "vigil run reads URLs from a file or an environment variable: use file or env".into(),
        )),
        _ => match &from.secret_key_ref {
            Some(r) if r.name.is_empty() || r.key.is_empty() => Some((
                ".secretKeyRef",
                "name and key must not be empty".into(),
            )),
            _ => None,
        },
    }
}

/// The sinks a Rollout's annotations subscribe to `trigger` (comma-separated names in
/// `notifications.vigil.dev/<trigger>`), and the problems with them (an unknown trigger or
/// sink), each at its annotation. Names only: a Rollout writer never gives a URL.
pub fn annotation_subscriptions<'a>(
    annotations: impl IntoIterator<Item = (&'a str, &'a str)>,
    config: &NotificationsConfig,
) -> (BTreeMap<Trigger, Vec<String>>, Vec<Problem>) {
    let mut subscriptions: BTreeMap<Trigger, Vec<String>> = BTreeMap::new();
    let mut problems = Vec::new();
    for (key, value) in annotations {
        let Some(trigger_name) = key.strip_prefix(ANNOTATION_PREFIX) else {
            continue;
        };
        let path = format!("metadata.annotations[{key}]");
        let Some(trigger) = Trigger::from_name(trigger_name) else {
            let names: Vec<&str> = Trigger::ALL.iter().map(|t| t.name()).collect();
            problems.push(Problem {
                path,
                message: format!(
                    "`{trigger_name}` is not a trigger; expected one of {}",
                    names.join(", ")
                ),
            });
            continue;
        };
        for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if config.sinks.iter().any(|s| s.name == name) {
                let sinks = subscriptions.entry(trigger).or_default();
                if !sinks.iter().any(|s| s == name) && sinks.len() < MAX_SINKS {
                    sinks.push(name.to_owned());
                }
            } else {
                problems.push(Problem {
                    path: path.clone(),
                    message: format!("no notification sink is named `{name}`"),
                });
            }
        }
    }
    (subscriptions, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r"
sinks:
  - name: team-slack
    type: slack
    urlFrom:
      secretKeyRef: { name: vigil-notifications, key: slack-url }
  - name: audit
    type: webhook
    urlFrom:
      secretKeyRef: { name: vigil-notifications, key: audit-url }
subscriptions:
  on-rolled-back: [team-slack, audit]
  on-promoted: [audit]
";

    #[test]
    fn the_example_parses_for_the_controller() {
        let config = NotificationsConfig::parse(EXAMPLE, Platform::Kubernetes).expect("valid");
        assert_eq!(config.sinks.len(), 2);
        assert_eq!(
            config.subscriptions[&Trigger::OnRolledBack],
            vec!["team-slack", "audit"]
        );
    }

    #[test]
    fn bad_fields_are_named() {
        let cases = [
            ("sinks: [{name: a, type: slack, url: 'https://x'}]", "url"),
            (
                "sinks: [{name: a, type: email, urlFrom: {env: X}}]",
                "email",
            ),
            ("subscriptions: {on-fire: []}", "on-fire"),
            ("sink: []", "sink"),
        ];
        for (text, named) in cases {
            let error = NotificationsConfig::parse(text, Platform::Any).expect_err(text);
            assert!(error.to_string().contains(named), "{text}: {error}");
        }
    }

    #[test]
    fn rules_are_checked_at_their_fields() {
        let text = r"
sinks:
  - {name: Team, type: slack, urlFrom: {env: A}}
  - {name: b, type: slack, urlFrom: {env: A, file: /x}}
  - {name: b, type: webhook, urlFrom: {secretKeyRef: {name: s, key: k}}}
subscriptions:
  on-paused: [nobody]
";
        let Err(ConfigError::Validate(problems)) =
            NotificationsConfig::parse(text, Platform::Local)
        else {
            panic!("expected problems");
        };
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            vec![
                "sinks[0].name",
                "sinks[1].urlFrom",
                "sinks[2].name",
                "sinks[2].urlFrom.secretKeyRef",
                "subscriptions.on-paused[0]",
            ],
            "{problems:?}"
        );
        let Err(ConfigError::Validate(problems)) = NotificationsConfig::parse(
            "sinks: [{name: a, type: slack, urlFrom: {file: /run/url}}]",
            Platform::Kubernetes,
        ) else {
            panic!("file is not for the controller");
        };
        assert_eq!(problems[0].path, "sinks[0].urlFrom");
    }

    #[test]
    fn annotations_pick_sinks_by_name_only() {
        let config = NotificationsConfig::parse(EXAMPLE, Platform::Kubernetes).expect("valid");
        let annotations = [
            ("notifications.vigil.dev/on-started", "team-slack, audit"),
            (
                "notifications.vigil.dev/on-paused",
                "https://evil.example/x",
            ),
            ("notifications.vigil.dev/on-whatever", "audit"),
            ("other.io/on-started", "audit"),
        ];
        let (subscriptions, problems) = annotation_subscriptions(annotations, &config);
        assert_eq!(
            subscriptions,
            BTreeMap::from([(
                Trigger::OnStarted,
                vec!["team-slack".to_owned(), "audit".to_owned()]
            )])
        );
        let messages: Vec<&str> = problems.iter().map(|p| p.message.as_str()).collect();
        assert_eq!(messages.len(), 2, "{messages:?}");
        assert!(messages[0].contains("no notification sink is named"));
        assert!(messages[1].contains("`on-whatever` is not a trigger"));
    }

    #[test]
    fn trigger_names_round_trip() {
        for trigger in Trigger::ALL {
            assert_eq!(Trigger::from_name(trigger.name()), Some(trigger));
            let yaml = serde_norway::to_string(&trigger).expect("yaml");
            assert_eq!(yaml.trim(), trigger.name());
        }
    }
}

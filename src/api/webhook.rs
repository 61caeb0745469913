//! Rollout webhooks (Flagger's model): HTTP calls that gate, observe or roll back a canary.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The most webhooks one Rollout may declare.
pub const MAX_WEBHOOKS: usize = 20;
/// The longest `timeout` a webhook may set: 1 minute. A gate is polled again later, so a
/// receiver that needs longer should answer "not yet" and be asked again.
pub const MAX_WEBHOOK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
/// The `timeout` of a webhook that sets none, as Flagger's.
pub const DEFAULT_WEBHOOK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// The longest `url` a webhook may set, in bytes.
pub const MAX_WEBHOOK_URL_LEN: usize = 2048;
/// The most `metadata` entries a webhook may set.
pub const MAX_WEBHOOK_METADATA: usize = 32;
/// The longest `metadata` key or value, in bytes.
pub const MAX_WEBHOOK_METADATA_LEN: usize = 1024;

/// A webhook called by the controller during a canary release (Flagger's `webhooks`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Webhook {
    /// Unique name of the webhook within the Rollout; status and messages name it.
    pub name: String,
    /// When it is called and what its answer means.
    #[serde(rename = "type")]
    pub type_: WebhookType,
    /// Where the JSON payload is POSTed (`http` or `https`). Redirects are not followed.
    pub url: String,
    /// How long to wait for an answer of a gate or rollback hook, e.g. `10s` (default 10s, at
    /// most 1m); no answer in time counts as a failed call. `post-rollout` and `event` hooks
    /// are delivered by the notification outbox, with its own timeout (10s) and retries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(ms|s|m|h))+$"))]
    pub timeout: Option<String>,
    /// Strings sent as `metadata` in the payload (at most 32 entries), e.g. what a receiver
    /// should run. Never put secrets here: the Rollout is readable by anyone who can read it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

/// When a webhook is called and what its answer means. Any answer other than HTTP 2xx
/// (including no answer within the timeout) is a failure.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum WebhookType {
    /// Before any traffic moves to a new canary: a failure holds the rollout, called again
    /// later.
    #[serde(rename = "pre-rollout")]
    #[default]
    PreRollout,
    /// Before the canary is scaled up: the rollout waits until it answers 2xx.
    #[serde(rename = "confirm-rollout")]
    ConfirmRollout,
    /// Before each increase of the canary weight: the rollout waits until it answers 2xx.
    #[serde(rename = "confirm-traffic-increase")]
    ConfirmTrafficIncrease,
    /// Before the canary is promoted: the rollout waits until it answers 2xx.
    #[serde(rename = "confirm-promotion")]
    ConfirmPromotion,
    /// Once the canary was promoted or rolled back; a failure is only logged and evented.
    #[serde(rename = "post-rollout")]
    PostRollout,
    /// Called while a canary is in flight: an answer 2xx rolls the canary back (an external
    /// kill switch).
    #[serde(rename = "rollback")]
    Rollback,
    /// Every transition (the Rollout's events), fire and forget.
    #[serde(rename = "event")]
    Event,
}

impl WebhookType {
    /// The name as written in YAML, e.g. `confirm-promotion`.
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookType::PreRollout => "pre-rollout",
            WebhookType::ConfirmRollout => "confirm-rollout",
            WebhookType::ConfirmTrafficIncrease => "confirm-traffic-increase",
            WebhookType::ConfirmPromotion => "confirm-promotion",
            WebhookType::PostRollout => "post-rollout",
            WebhookType::Rollback => "rollback",
            WebhookType::Event => "event",
        }
    }
}

impl std::fmt::Display for WebhookType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the webhooks of the current canary attempt decided, kept in status so that a restarted
/// controller neither skips a gate nor asks a passed one again.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookStatus {
    /// The canary attempt the gates below belong to, `<revision>/<attempt>`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub attempt: String,
    /// The gates that answered 2xx for this attempt: `<hook name>` for pre-rollout,
    /// confirm-rollout and confirm-promotion, `<hook name>@<step index>` for
    /// confirm-traffic-increase.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub passed: Vec<String>,
}

//! What the state machine asks of webhooks and what it is told back: pure data, no I/O.
//!
//! The machine never calls anything. It lists, in [`super::Decision::webhook_calls`], the
//! gates and kill switches it waits on ([`CallKind::Poll`]: pre-rollout, confirm-*, rollback)
//! and the notifications due ([`CallKind::Notify`]: post-rollout, event). The I/O shell
//! ([`crate::platform::webhooks`]) polls the former in the background and reports their
//! latest answers in [`super::Observation::webhook_answers`], by [`WebhookCall::key`]; it
//! queues the latter, fire and forget.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::api::WebhookType;

/// How often a pending gate or a rollback switch is asked again, and the machine looks again.
pub const WEBHOOK_POLL_INTERVAL: Duration = Duration::from_secs(10);

/// One call the machine wants made.
#[derive(Clone, Debug, PartialEq)]
pub struct WebhookCall {
    /// Identifies the call. A poll: the same key means the same question (same hook, canary
    /// attempt and step), so its answer may be reused. A notification: the same key means
    /// the same news (hook, attempt, step, event), so it is delivered once.
    pub key: String,
    /// Poll (the answer is wanted) or notify (fire and forget).
    pub kind: CallKind,
    /// The hook's `name`.
    pub name: String,
    /// The hook's `url`.
    pub url: String,
    /// The hook's `timeout`, parsed and bounded.
    pub timeout: Duration,
    /// What is POSTed, as JSON.
    pub payload: WebhookPayload,
}

/// Whether a call's answer matters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallKind {
    /// A gate or a rollback switch: ask (again once [`WEBHOOK_POLL_INTERVAL`] has passed after
    /// a failed answer) and report the answer.
    Poll,
    /// A post-rollout or event notification: deliver with bounded retries, the answer is only
    /// logged.
    Notify,
}

/// The JSON body of every webhook call: Flagger's keys (`name`, `namespace`, `phase`,
/// `metadata`) plus vigil's.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookPayload {
    /// The Rollout's name.
    pub name: String,
    /// The Rollout's namespace (the shell fills it in; absent on the local platform).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The Rollout's phase, e.g. `Progressing`.
    pub phase: String,
    /// The hook's `metadata`; for `event` hooks also `eventType` and `eventMessage`, as
    /// Flagger sends them.
    pub metadata: BTreeMap<String, String>,
    /// The hook's type, e.g. `confirm-promotion`.
    #[serde(rename = "type")]
    pub type_: String,
    /// The hook's name.
    pub webhook: String,
    /// The step as status shows it, e.g. `2/5`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// The revisions involved.
    pub revisions: PayloadRevisions,
    /// Percent of traffic on each.
    pub weights: PayloadWeights,
    /// The analysis of the current step or the background one, when any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub analysis: Option<PayloadAnalysis>,
    /// The status message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The event, for `event` hooks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<PayloadEvent>,
}

/// The stable and canary revisions (template hashes).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PayloadRevisions {
    /// The stable revision.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stable: Option<String>,
    /// The canary revision, while there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canary: Option<String>,
}

/// The traffic split as set.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PayloadWeights {
    /// Percent on the stable revision.
    pub stable: i32,
    /// Percent on the canary revision.
    pub canary: i32,
}

/// An analysis in a few words.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PayloadAnalysis {
    /// The AnalysisRun's name.
    pub run: String,
    /// Its phase, e.g. `Failed`.
    pub phase: String,
    /// The first failing metric, when any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failing_metric: Option<String>,
    /// Why it failed (or the run's message).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A Rollout event, as recorded.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PayloadEvent {
    /// `Normal` or `Warning`.
    #[serde(rename = "type")]
    pub type_: String,
    /// e.g. `RolloutCompleted`.
    pub reason: String,
    /// What happened.
    pub message: String,
}

/// The latest answer to a polled call, as the shell saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookAnswer {
    /// [`WebhookCall::key`] of the call answered.
    pub key: String,
    /// What came back.
    pub outcome: WebhookOutcome,
}

/// What a call got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WebhookOutcome {
    /// An HTTP answer with this status code.
    Answered {
        /// The status code.
        status: u16,
    },
    /// No HTTP answer: unreachable, timed out, refused before sending. The reason is the
    /// shell's words (bounded, no secrets).
    Failed {
        /// Why.
        reason: String,
    },
}

impl WebhookOutcome {
    /// Whether the answer was HTTP 2xx.
    pub fn passed(&self) -> bool {
        matches!(self, WebhookOutcome::Answered { status } if (200..300).contains(status))
    }
}

impl std::fmt::Display for WebhookOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WebhookOutcome::Answered { status } => write!(f, "answered HTTP {status}"),
            WebhookOutcome::Failed { reason } => f.write_str(reason),
        }
    }
}

/// The key of a polled call: the same hook, canary attempt and step ask the same question.
pub fn poll_key(
    type_: WebhookType,
    name: &str,
    canary: &str,
    attempt: i32,
    index: Option<usize>,
) -> String {
    match index {
        Some(index) => format!("{type_}/{name}/{canary}/{attempt}@{index}"),
        None => format!("{type_}/{name}/{canary}/{attempt}"),
    }
}

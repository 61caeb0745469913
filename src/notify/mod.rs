//! Notifications: telling people about a rollout's transitions (started, step completed,
//! paused, promoted, rolled back, progress deadline) through webhooks and Slack-compatible
//! incoming webhooks, off the reconcile path.
//!
//! - [`outbox`]: the bounded delivery queue and its worker (retries, backoff, timeouts,
//!   counters). Anything that sends a JSON POST on vigil's behalf goes through it.

pub mod outbox;

pub use outbox::{
    Delivery, Enqueued, NotificationMetrics, Outbox, OutboxError, OutboxSettings, SinkUrl,
};

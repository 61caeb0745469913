//! Notifications: telling people about a rollout's transitions (started, step completed,
//! paused, promoted, rolled back, progress deadline) through webhooks and Slack-compatible
//! incoming webhooks, off the reconcile path.
//!
//! - [`outbox`]: the bounded delivery queue and its worker (retries, backoff, timeouts,
//!   counters). Anything that sends a JSON POST on vigil's behalf goes through it.
//! - [`config`]: the configuration (sinks, URLs by reference, default subscriptions) and the
//!   Rollout annotations that add subscriptions by sink name.
//! - [`message`]: pure: the transitions of a recorded decision and their wording.
//! - [`lint`]: what `vigil lint` checks of the configuration and the annotations.
//! - [`notifier`]: who hears what: subscriptions resolved, bodies shaped, deliveries queued.

pub mod config;
pub mod lint;
pub mod message;
pub mod notifier;
pub mod outbox;

pub use config::{NotificationsConfig, Trigger};
pub use message::{RolloutRef, Transition, transitions};
pub use notifier::{Notifier, SharedNotifier};

pub use outbox::{
    Delivery, Enqueued, NotificationMetrics, Outbox, OutboxError, OutboxSettings, SinkUrl,
};

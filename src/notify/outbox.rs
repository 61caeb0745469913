//! The delivery outbox: notifications leave the reconcile path here.
//!
//! [`Outbox::enqueue`] never waits: it puts a [`Delivery`] on a bounded queue, or drops it and
//! counts the drop when the queue is full (a receiver that is down or slow never holds a
//! reconcile, a rollback least of all). A worker task takes deliveries off the queue and POSTs
//! each one, a bounded number at a time, with a timeout per attempt, no redirects (a redirect
//! would carry the body to another host) and a bounded number of retries with exponential
//! backoff on the failures worth retrying (connection errors, timeouts, 429 and 5xx).
//!
//! A delivery's URL is a secret (a Slack incoming-webhook URL is its own credential):
//! [`SinkUrl`] has no `Display`, its `Debug` is redacted, and errors are logged without it.
//! Sinks are named by the controller's configuration, so the `sink` label is bounded.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tokio::sync::{Semaphore, mpsc};
use tracing::{debug, warn};
use url::Url;

/// Deliveries waiting to be sent, at most; more are dropped (and counted).
pub const DEFAULT_CAPACITY: usize = 1024;
/// Deliveries being sent at the same time, at most.
pub const DEFAULT_CONCURRENCY: usize = 8;
/// Attempts of one delivery, at most (the first one included).
pub const DEFAULT_MAX_ATTEMPTS: u32 = 4;
/// The wait before the second attempt; it doubles for each next one.
pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_secs(1);
/// The longest wait between two attempts.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// The longest one attempt may take (connect, send, answer).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Dedupe keys remembered (per process); the oldest are forgotten first.
pub const DEDUPE_MEMORY: usize = 4096;
/// Ceilings on the settings, whatever the configuration says.
pub const MAX_CAPACITY: usize = 65_536;
/// The most attempts one delivery may be given.
pub const MAX_ATTEMPTS: u32 = 10;
/// The longest timeout of one attempt.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(60);
/// Deliveries to one origin (scheme, host, port) in flight at once, at most: a receiver that
/// hangs holds this many slots, never all of them.
pub const DEFAULT_PER_ORIGIN: usize = 2;
/// Deliveries to one origin waiting or under way, at most: beyond it that origin's new
/// deliveries are dropped (and counted), so one receiver that hangs cannot fill the queue
/// and have every other receiver's deliveries dropped.
pub const DEFAULT_PER_ORIGIN_QUEUED: usize = 128;
/// The longest `Retry-After` honoured (a receiver asking for more gets this).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// A sink's URL: a secret. No `Display`; `Debug` prints `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct SinkUrl(Url);

impl SinkUrl {
    /// Wraps `url`; only `http` and `https` are accepted (the error does not echo the URL).
    pub fn new(url: Url) -> Result<SinkUrl, OutboxError> {
        match url.scheme() {
            "http" | "https" if url.host().is_some() => Ok(SinkUrl(url)),
            scheme => Err(OutboxError::UnsupportedUrl {
                scheme: scheme.to_owned(),
            }),
        }
    }

    /// Parses `text` (a secret: not echoed in the error).
    pub fn parse(text: &str) -> Result<SinkUrl, OutboxError> {
        let url = Url::parse(text.trim()).map_err(|_| OutboxError::InvalidUrl)?;
        SinkUrl::new(url)
    }

    /// The URL, for sending only.
    fn expose(&self) -> &Url {
        &self.0
    }
}

impl std::fmt::Debug for SinkUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SinkUrl(<redacted>)")
    }
}

/// One message for one sink.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// The sink's name (from the configuration); labels the metrics and the logs.
    pub sink: String,
    /// Where to POST.
    pub url: SinkUrl,
    /// The JSON body.
    pub body: serde_json::Value,
    /// Identifies the event: a second delivery with the same sink and key is not sent (a
    /// reconcile repeated after a conflict must not notify twice). E.g.
    /// `shop/web/abc123/2/on-rolled-back/3` (rollout, revision, attempt, trigger, step).
    pub dedupe_key: String,
}

/// What [`Outbox::enqueue`] did with a delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Enqueued {
    /// On the queue.
    Queued,
    /// The same sink and dedupe key were queued before: not sent again.
    Duplicate,
    /// The queue was full (or the worker gone): dropped and counted.
    Dropped,
}

/// How the outbox delivers. Values above the `MAX_*` ceilings are lowered to them.
#[derive(Clone, Debug)]
pub struct OutboxSettings {
    /// Queue length ([`DEFAULT_CAPACITY`]).
    pub capacity: usize,
    /// Deliveries in flight at once ([`DEFAULT_CONCURRENCY`]).
    pub concurrency: usize,
    /// Attempts per delivery ([`DEFAULT_MAX_ATTEMPTS`]).
    pub max_attempts: u32,
    /// Wait before the second attempt, doubled each time ([`DEFAULT_BACKOFF_BASE`]).
    pub backoff_base: Duration,
    /// Longest wait between attempts ([`DEFAULT_BACKOFF_MAX`]).
    pub backoff_max: Duration,
    /// Timeout of one attempt ([`DEFAULT_TIMEOUT`]).
    pub timeout: Duration,
    /// Deliveries to one origin in flight at once ([`DEFAULT_PER_ORIGIN`]).
    pub per_origin: usize,
    /// Deliveries to one origin queued or under way ([`DEFAULT_PER_ORIGIN_QUEUED`]).
    pub per_origin_queued: usize,
    /// Which destinations may be reached (link-local and metadata addresses are refused
    /// unless the operator allows them).
    pub egress: crate::http_client::EgressGuard,
}

impl Default for OutboxSettings {
    fn default() -> Self {
        OutboxSettings {
            capacity: DEFAULT_CAPACITY,
            concurrency: DEFAULT_CONCURRENCY,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            backoff_base: DEFAULT_BACKOFF_BASE,
            backoff_max: DEFAULT_BACKOFF_MAX,
            timeout: DEFAULT_TIMEOUT,
            per_origin: DEFAULT_PER_ORIGIN,
            per_origin_queued: DEFAULT_PER_ORIGIN_QUEUED,
            egress: crate::http_client::EgressGuard::default(),
        }
    }
}

impl OutboxSettings {
    fn bounded(mut self) -> Self {
        self.capacity = self.capacity.clamp(1, MAX_CAPACITY);
        self.concurrency = self.concurrency.clamp(1, 64);
        self.per_origin = self.per_origin.clamp(1, self.concurrency);
        self.per_origin_queued = self.per_origin_queued.clamp(1, self.capacity);
        self.max_attempts = self.max_attempts.clamp(1, MAX_ATTEMPTS);
        self.timeout = self.timeout.min(MAX_TIMEOUT);
        self.backoff_max = self.backoff_max.min(Duration::from_secs(300));
        self.backoff_base = self.backoff_base.min(self.backoff_max);
        self
    }

    /// The wait after failed attempt `attempt` (1-based): base × 2^(attempt−1), capped.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.backoff_base
            .saturating_mul(factor)
            .min(self.backoff_max)
    }
}

/// Why the outbox could not start or a URL was refused.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// The HTTP client could not be built (e.g. no TLS roots on this system).
    #[error("failed to build the notifications HTTP client: {0}")]
    BuildClient(#[source] reqwest::Error),
    /// The URL is not `http` or `https` with a host.
    #[error("a sink URL must be http or https with a host, not {scheme:?}")]
    UnsupportedUrl {
        /// The scheme found.
        scheme: String,
    },
    /// The URL does not parse (the URL is a secret, so it is not repeated here).
    #[error("a sink URL does not parse as a URL")]
    InvalidUrl,
}

/// Labels of the notification counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabels {
    /// The sink's name, from the configuration.
    pub sink: String,
}

/// `vigil_notifications_{sent,failed,dropped}_total{sink}`.
#[derive(Clone, Debug, Default)]
pub struct NotificationMetrics {
    /// Deliveries the receiver accepted (2xx).
    pub sent: Family<SinkLabels, Counter>,
    /// Deliveries given up (attempts exhausted or refused).
    pub failed: Family<SinkLabels, Counter>,
    /// Deliveries dropped because the queue was full.
    pub dropped: Family<SinkLabels, Counter>,
}

impl NotificationMetrics {
    /// Registers the three counters in `registry` (prefixed `vigil_` by the controller's).
    pub fn register(registry: &mut Registry) -> NotificationMetrics {
        let metrics = NotificationMetrics::default();
        registry.register(
            "notifications_sent",
            "Notifications delivered, by sink",
            metrics.sent.clone(),
        );
        registry.register(
            "notifications_failed",
            "Notifications given up after their retries, by sink",
            metrics.failed.clone(),
        );
        registry.register(
            "notifications_dropped",
            "Notifications dropped because the queue was full, by sink",
            metrics.dropped.clone(),
        );
        metrics
    }

    fn count(family: &Family<SinkLabels, Counter>, sink: &str) {
        family
            .get_or_create(&SinkLabels {
                sink: sink.to_owned(),
            })
            .inc();
    }

    /// The value of `family` for `sink` (tests and the local engine's summary).
    pub fn value(family: &Family<SinkLabels, Counter>, sink: &str) -> u64 {
        family
            .get_or_create(&SinkLabels {
                sink: sink.to_owned(),
            })
            .get()
    }
}

/// The dedupe keys seen lately, oldest first out.
#[derive(Debug, Default)]
struct RecentKeys {
    order: VecDeque<(String, String)>,
    set: HashSet<(String, String)>,
}

impl RecentKeys {
    /// Remembers `key`; false when it was already there.
    fn insert(&mut self, key: (String, String)) -> bool {
        if self.set.contains(&key) {
            return false;
        }
        if self.order.len() >= DEDUPE_MEMORY
            && let Some(oldest) = self.order.pop_front()
        {
            self.set.remove(&oldest);
        }
        self.order.push_back(key.clone());
        self.set.insert(key);
        true
    }

    fn forget(&mut self, key: &(String, String)) {
        if self.set.remove(key) {
            self.order.retain(|k| k != key);
        }
    }
}

/// The sending side of the queue; cheap to clone. Dropping every clone stops the worker once
/// the queue is empty.
#[derive(Clone, Debug)]
pub struct Outbox {
    queue: mpsc::Sender<Delivery>,
    recent: Arc<Mutex<RecentKeys>>,
    pending: PendingByOrigin,
    metrics: NotificationMetrics,
}

/// Deliveries queued or under way, per destination origin (an origin goes with its last).
#[derive(Clone, Debug)]
struct PendingByOrigin {
    counts: Arc<Mutex<HashMap<String, usize>>>,
    limit: usize,
}

impl PendingByOrigin {
    /// Counts one more for `origin`; false (nothing counted) when it has `limit` already.
    fn add(&self, origin: &str) -> bool {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let count = counts.entry(origin.to_owned()).or_default();
        if *count >= self.limit {
            return false;
        }
        *count += 1;
        true
    }

    fn remove(&self, origin: &str) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = counts.get_mut(origin) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(origin);
            }
        }
    }
}

fn origin_of(delivery: &Delivery) -> String {
    delivery.url.expose().origin().ascii_serialization()
}

impl Outbox {
    /// Starts the worker on the current Tokio runtime and returns the queue's sending side
    /// and the worker's handle (it ends once every [`Outbox`] clone is dropped and what was
    /// queued is sent or given up).
    pub fn start(
        settings: OutboxSettings,
        metrics: NotificationMetrics,
    ) -> Result<(Outbox, tokio::task::JoinHandle<()>), OutboxError> {
        let settings = settings.bounded();
        // No redirects (one would carry the message, and for some receivers the secret path
        // it was sent to, to another host), no proxy, guarded destinations.
        let client = crate::http_client::builder(&settings.egress)
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .build()
            .map_err(OutboxError::BuildClient)?;
        let (queue, receiver) = mpsc::channel(settings.capacity);
        let pending = PendingByOrigin {
            counts: Arc::default(),
            limit: settings.per_origin_queued,
        };
        let worker = Worker {
            pending: pending.clone(),
            client,
            slots: Arc::new(Semaphore::new(settings.concurrency)),
            origins: Mutex::default(),
            settings: Arc::new(settings),
            metrics: metrics.clone(),
        };
        let handle = tokio::spawn(worker.run(receiver));
        Ok((
            Outbox {
                queue,
                recent: Arc::default(),
                pending,
                metrics,
            },
            handle,
        ))
    }

    /// Queues `delivery` without waiting: [`Enqueued::Dropped`] (counted) when the queue is
    /// full, [`Enqueued::Duplicate`] when its sink and dedupe key were queued before.
    pub fn enqueue(&self, delivery: Delivery) -> Enqueued {
        let key = (delivery.sink.clone(), delivery.dedupe_key.clone());
        let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        if !recent.insert(key.clone()) {
            debug!(sink = %delivery.sink, key = %delivery.dedupe_key, "notification already queued");
            return Enqueued::Duplicate;
        }
        let sink = delivery.sink.clone();
        let origin = origin_of(&delivery);
        if !self.pending.add(&origin) {
            recent.forget(&key);
            NotificationMetrics::count(&self.metrics.dropped, &sink);
            warn!(%sink, "too many notifications queued for this receiver: notification dropped");
            return Enqueued::Dropped;
        }
        match self.queue.try_send(delivery) {
            Ok(()) => Enqueued::Queued,
            Err(_) => {
                self.pending.remove(&origin);
                // Not remembered: a later identical event may still get through.
                recent.forget(&key);
                NotificationMetrics::count(&self.metrics.dropped, &sink);
                warn!(%sink, "notification queue full: notification dropped");
                Enqueued::Dropped
            }
        }
    }

    /// The counters this outbox updates.
    pub fn metrics(&self) -> &NotificationMetrics {
        &self.metrics
    }
}

/// The receiving side: sends what is queued, a bounded number at a time.
///
/// A delivery holds a slot only while an attempt is on the wire: between attempts it waits
/// holding nothing. It first takes one of its origin's slots ([`OutboxSettings::per_origin`]),
/// then one of the global ones, so a receiver that hangs or rate-limits holds at most
/// `per_origin` of the global slots and every other receiver keeps the rest.
struct Worker {
    client: reqwest::Client,
    slots: Arc<Semaphore>,
    /// The slots of each origin with a delivery under way; an origin's entry goes with its
    /// last delivery.
    origins: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// Shared with the [`Outbox`]: a delivery is counted until it is sent or given up.
    pending: PendingByOrigin,
    settings: Arc<OutboxSettings>,
    metrics: NotificationMetrics,
}

/// How one attempt ended.
enum Attempt {
    Sent,
    /// Worth another attempt: what went wrong, for the log, and how long the receiver asked
    /// us to wait (`Retry-After`, capped), if it did.
    Retry(String, Option<Duration>),
    /// Not worth another attempt (e.g. 400, 404, a redirect, a refused destination).
    GiveUp(String),
}

impl Worker {
    async fn run(self, mut receiver: mpsc::Receiver<Delivery>) {
        // Deliveries taken off the queue and not finished (in flight or waiting to retry),
        // at most as many as the queue holds: beyond it the queue fills (and drops).
        let accepted = Arc::new(Semaphore::new(self.settings.capacity));
        let this = Arc::new(self);
        let mut under_way = tokio::task::JoinSet::new();
        loop {
            // The semaphore is never closed.
            let Ok(permit) = Arc::clone(&accepted).acquire_owned().await else {
                break;
            };
            let Some(delivery) = receiver.recv().await else {
                break;
            };
            let this = Arc::clone(&this);
            under_way.spawn(async move {
                let origin = origin_of(&delivery);
                this.deliver(delivery).await;
                this.pending.remove(&origin);
                drop(permit);
            });
            // Reap the finished ones so the set does not grow.
            while under_way.try_join_next().is_some() {}
        }
        while under_way.join_next().await.is_some() {}
    }

    async fn deliver(&self, delivery: Delivery) {
        let sink = delivery.sink.as_str();
        let max = self.settings.max_attempts;
        let origin = origin_of(&delivery);
        for attempt in 1..=max {
            let outcome = self.attempt_in_slots(&origin, &delivery).await;
            match outcome {
                Attempt::Sent => {
                    debug!(%sink, attempt, key = %delivery.dedupe_key, "notification sent");
                    NotificationMetrics::count(&self.metrics.sent, sink);
                    return;
                }
                Attempt::Retry(why, asked) if attempt < max => {
                    let wait = asked.unwrap_or_else(|| self.settings.backoff(attempt));
                    debug!(%sink, attempt, %why, ?wait, "notification attempt failed; retrying");
                    // No slot is held while waiting.
                    tokio::time::sleep(wait).await;
                }
                Attempt::Retry(why, _) | Attempt::GiveUp(why) => {
                    warn!(%sink, attempt, %why, key = %delivery.dedupe_key, "notification not delivered");
                    NotificationMetrics::count(&self.metrics.failed, sink);
                    return;
                }
            }
        }
    }

    /// One attempt, holding one of `origin`'s slots and one global slot while it runs.
    async fn attempt_in_slots(&self, origin: &str, delivery: &Delivery) -> Attempt {
        let origin_slots = Arc::clone(
            self.lock_origins()
                .entry(origin.to_owned())
                .or_insert_with(|| Arc::new(Semaphore::new(self.settings.per_origin))),
        );
        let outcome = match origin_slots.acquire().await {
            Ok(_origin_permit) => match self.slots.acquire().await {
                Ok(_permit) => self.attempt(delivery).await,
                Err(_) => Attempt::GiveUp("the outbox is closing".to_owned()),
            },
            Err(_) => Attempt::GiveUp("the outbox is closing".to_owned()),
        };
        let mut origins = self.lock_origins();
        // Ours and the map's are the last references: nobody else waits on this origin.
        if Arc::strong_count(&origin_slots) == 2 {
            origins.remove(origin);
        }
        outcome
    }

    fn lock_origins(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Semaphore>>> {
        self.origins.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn attempt(&self, delivery: &Delivery) -> Attempt {
        if let Err(refused) = self.settings.egress.check_url(delivery.url.expose()) {
            return Attempt::GiveUp(refused.to_string());
        }
        let response = self
            .client
            .post(delivery.url.expose().clone())
            .json(&delivery.body)
            .send()
            .await;
        match response {
            Ok(response) => {
                let status = response.status();
                if status.is_success() {
                    Attempt::Sent
                } else if status.as_u16() == 429 || status.is_server_error() {
                    let asked = match status.as_u16() {
                        429 | 503 => retry_after(response.headers()),
                        _ => None,
                    };
                    Attempt::Retry(format!("receiver answered {status}"), asked)
                } else {
                    Attempt::GiveUp(format!("receiver answered {status}"))
                }
            }
            // `without_url`: the URL is the secret.
            Err(error) if error.is_timeout() => {
                Attempt::Retry(format!("timed out after {:?}", self.settings.timeout), None)
            }
            Err(error) => match crate::http_client::refused_by_guard(&error) {
                Some(refused) => Attempt::GiveUp(refused.to_string()),
                None => Attempt::Retry(error_chain(&error.without_url()), None),
            },
        }
    }
}

/// The wait a `Retry-After: <seconds>` header asks for, at most [`MAX_RETRY_AFTER`]; `None`
/// without one or in its date form (the backoff applies then).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let seconds: u64 = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds).min(MAX_RETRY_AFTER))
}

/// An error and its causes, without the URL.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_never_shows_in_debug_or_errors() {
        let url = SinkUrl::parse("https://hooks.example/services/T0/B0/SECRET").expect("url");
        assert!(!format!("{url:?}").contains("SECRET"));
        let error = SinkUrl::parse("ftp://x/SECRET").expect_err("ftp");
        assert!(!error.to_string().contains("SECRET"), "{error}");
        let error = SinkUrl::parse("not a url SECRET").expect_err("garbage");
        assert!(!error.to_string().contains("SECRET"), "{error}");
    }

    #[test]
    fn retry_after_is_read_in_seconds_and_capped() {
        let mut headers = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(reqwest::header::RETRY_AFTER, "7".parse().expect("value"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        headers.insert(
            reqwest::header::RETRY_AFTER,
            "86400".parse().expect("value"),
        );
        assert_eq!(retry_after(&headers), Some(MAX_RETRY_AFTER));
        headers.insert(
            reqwest::header::RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().expect("value"),
        );
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn backoff_doubles_up_to_its_ceiling() {
        let settings = OutboxSettings {
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(5),
            ..OutboxSettings::default()
        };
        let waits: Vec<u64> = (1..=5).map(|a| settings.backoff(a).as_secs()).collect();
        assert_eq!(waits, vec![1, 2, 4, 5, 5]);
        assert_eq!(settings.backoff(u32::MAX), Duration::from_secs(5));
    }

    #[test]
    fn settings_are_bounded() {
        let settings = OutboxSettings {
            capacity: 0,
            concurrency: 10_000,
            max_attempts: 1_000,
            timeout: Duration::from_secs(3600),
            ..OutboxSettings::default()
        }
        .bounded();
        assert_eq!(settings.capacity, 1);
        assert_eq!(settings.concurrency, 64);
        assert_eq!(settings.max_attempts, MAX_ATTEMPTS);
        assert_eq!(settings.timeout, MAX_TIMEOUT);
    }

    #[test]
    fn recent_keys_forget_the_oldest_beyond_their_memory() {
        let mut recent = RecentKeys::default();
        let key = |i: usize| ("slack".to_owned(), format!("k{i}"));
        assert!(recent.insert(key(0)));
        assert!(!recent.insert(key(0)));
        for i in 1..=DEDUPE_MEMORY {
            assert!(recent.insert(key(i)));
        }
        assert!(recent.insert(key(0)), "k0 was the oldest, forgotten");
        assert_eq!(recent.order.len(), DEDUPE_MEMORY);
    }
}

//! The I/O half of rollout webhooks, shared by both platforms: it makes the calls the state
//! machine lists in [`Decision::webhook_calls`](crate::rollout::Decision) and never makes a
//! reconcile wait for one.
//!
//! * **Polls** (gates, rollback switches) run in background tasks; their latest answers are
//!   kept per call key and read back by the next observation
//!   ([`WebhookCaller::answers`]). A failed answer is asked again once `retry_after` has
//!   passed; a 2xx answer is kept while the machine still asks for that key; a call in flight
//!   is never started twice. A hanging receiver therefore delays nothing: the machine keeps
//!   deciding (and rolling back) from the answers it has.
//! * **Notifications** (post-rollout, event) go through notify's delivery [`Outbox`] (a
//!   bounded queue, bounded attempts with backoff, its own timeout, counted as
//!   `vigil_notifications_*_total{sink="webhook-post-rollout"|"webhook-event"}`), deduplicated
//!   by the call's key: a reconcile repeated after a conflict notifies once.
//!
//! Every poll is one POST of the JSON payload with the hook's timeout, no redirects followed,
//! no credentials, and the answer's body never read: only its status code counts. Errors name
//! the URL's origin only (a path or query may carry a token).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use crate::notify::{Delivery, Enqueued, NotificationMetrics, Outbox, OutboxSettings, SinkUrl};
use crate::rollout::webhooks::{
    CallKind, WEBHOOK_POLL_INTERVAL, WebhookAnswer, WebhookCall, WebhookOutcome,
};

/// Poll answers kept, at most, over all Rollouts; beyond it new polls wait for room.
pub const MAX_POLL_ENTRIES: usize = 10_000;
/// A poll answer nobody asked about for this long is forgotten (its Rollout is gone).
const FORGET_AFTER: Duration = Duration::from_secs(3600);

/// How the caller retries.
#[derive(Clone, Debug)]
pub struct WebhookCallerConfig {
    /// A failed poll is asked again after this long.
    pub retry_after: Duration,
    /// How notifications are delivered (notify's outbox settings).
    pub outbox: OutboxSettings,
    /// The counters notifications update.
    pub metrics: NotificationMetrics,
}

impl Default for WebhookCallerConfig {
    fn default() -> Self {
        WebhookCallerConfig {
            retry_after: WEBHOOK_POLL_INTERVAL / 2,
            outbox: OutboxSettings::default(),
            metrics: NotificationMetrics::default(),
        }
    }
}

/// Makes webhook calls for every Rollout of a platform; cheap to clone.
#[derive(Clone, Debug)]
pub struct WebhookCaller {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Built on first use (a rustls crypto provider must be installed by then); the error
    /// says why it could not be.
    http: OnceLock<Result<reqwest::Client, String>>,
    polls: Mutex<HashMap<(String, String), PollEntry>>,
    /// Started on first use, inside the runtime; `None` when it could not be.
    outbox: OnceLock<Option<Outbox>>,
    config: WebhookCallerConfig,
}

impl Inner {
    fn http(&self) -> Result<reqwest::Client, String> {
        self.http
            .get_or_init(|| {
                reqwest::Client::builder()
                    // A redirect would let a receiver send the payload somewhere the Rollout
                    // never named.
                    .redirect(reqwest::redirect::Policy::none())
                    .user_agent(concat!("vigil/", env!("CARGO_PKG_VERSION")))
                    .build()
                    .map_err(|e| {
                        format!(
                            "failed to build the webhook HTTP client: {}",
                            crate::analysis::provider::measurement::error_chain(&e)
                        )
                    })
            })
            .clone()
    }
}

#[derive(Debug)]
struct PollEntry {
    answer: Option<(WebhookOutcome, Instant)>,
    in_flight: bool,
    asked_at: Instant,
}

impl WebhookCaller {
    /// A caller; its HTTP client and delivery worker start on first use ([`Self::call`] must
    /// then run inside a tokio runtime, with a rustls crypto provider installed).
    pub fn new(config: WebhookCallerConfig) -> WebhookCaller {
        WebhookCaller {
            inner: Arc::new(Inner {
                http: OnceLock::new(),
                polls: Mutex::new(HashMap::new()),
                outbox: OnceLock::new(),
                config,
            }),
        }
    }

    /// Starts the calls `calls` of the Rollout `scope` (e.g. `namespace/name`) asks for,
    /// without waiting for any: polls not in flight and not freshly answered, and every
    /// notification. Polls of `scope` no longer asked for are forgotten.
    pub fn call(&self, scope: &str, namespace: Option<&str>, calls: &[WebhookCall]) {
        let now = Instant::now();
        let mut polls = self.lock();
        // Only a list of polls (empty included) says which polls are still asked for; a
        // list of notifications says nothing about them.
        let lists_polls = calls.iter().all(|c| c.kind == CallKind::Poll);
        polls.retain(|(owner, key), entry| {
            let asked = !lists_polls || owner != scope || calls.iter().any(|c| c.key == *key);
            entry.in_flight || (asked && now.duration_since(entry.asked_at) < FORGET_AFTER)
        });
        for call in calls {
            let mut call = call.clone();
            call.payload.namespace = namespace.map(str::to_owned);
            match call.kind {
                CallKind::Notify => self.enqueue(scope, call),
                CallKind::Poll => self.poll(&mut polls, scope, call, now),
            }
        }
    }

    /// The latest answers to the polls of `scope`.
    pub fn answers(&self, scope: &str) -> Vec<WebhookAnswer> {
        let polls = self.lock();
        let mut answers: Vec<WebhookAnswer> = polls
            .iter()
            .filter(|((owner, _), _)| owner == scope)
            .filter_map(|((_, key), entry)| {
                entry.answer.as_ref().map(|(outcome, _)| WebhookAnswer {
                    key: key.clone(),
                    outcome: outcome.clone(),
                })
            })
            .collect();
        answers.sort_by(|a, b| a.key.cmp(&b.key));
        answers
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), PollEntry>> {
        self.inner
            .polls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn enqueue(&self, scope: &str, call: WebhookCall) {
        let outbox = self.inner.outbox.get_or_init(|| {
            let config = &self.inner.config;
            Outbox::start(config.outbox.clone(), config.metrics.clone())
                .inspect_err(|error| tracing::warn!(%error, "webhook notifications are off"))
                .ok()
                // The worker ends once the outbox is dropped with the caller.
                .map(|(outbox, _worker)| outbox)
        });
        let Some(outbox) = outbox else { return };
        // Validated with the spec; a URL that does not parse here is never called.
        let Ok(url) = SinkUrl::parse(&call.url) else {
            return;
        };
        let body = match serde_json::to_value(&call.payload) {
            Ok(body) => body,
            Err(error) => {
                tracing::warn!(rollout = %scope, hook = %call.name, %error, "webhook payload not serialized");
                return;
            }
        };
        let delivery = Delivery {
            // A bounded label: one sink per notification type, whatever the hooks are named.
            sink: format!("webhook-{}", call.payload.type_),
            url,
            body,
            dedupe_key: format!("{scope}/{}", call.key),
        };
        if outbox.enqueue(delivery) == Enqueued::Dropped {
            tracing::warn!(rollout = %scope, hook = %call.name, "webhook notification dropped: the outbox is full");
        }
    }

    fn poll(
        &self,
        polls: &mut HashMap<(String, String), PollEntry>,
        scope: &str,
        call: WebhookCall,
        now: Instant,
    ) {
        let id = (scope.to_owned(), call.key.clone());
        if !polls.contains_key(&id) && polls.len() >= MAX_POLL_ENTRIES {
            tracing::warn!(rollout = %scope, hook = %call.name, "webhook poll deferred: too many polls kept");
            return;
        }
        let entry = polls.entry(id.clone()).or_insert(PollEntry {
            answer: None,
            in_flight: false,
            asked_at: now,
        });
        entry.asked_at = now;
        let due = match &entry.answer {
            None => true,
            Some((outcome, at)) => {
                !outcome.passed() && now.duration_since(*at) >= self.inner.config.retry_after
            }
        };
        if entry.in_flight || !due {
            return;
        }
        entry.in_flight = true;
        let inner = Arc::downgrade(&self.inner);
        let http = self.inner.http();
        tokio::spawn(async move {
            let outcome = post(&http, &call).await;
            tracing::debug!(rollout = %id.0, hook = %call.name, %outcome, "webhook answered");
            let Some(inner) = inner.upgrade() else { return };
            let mut polls = inner.polls.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(entry) = polls.get_mut(&id) {
                entry.in_flight = false;
                entry.answer = Some((outcome, Instant::now()));
            }
        });
    }
}

/// One POST of the payload; only the status code is read.
async fn post(http: &Result<reqwest::Client, String>, call: &WebhookCall) -> WebhookOutcome {
    let http = match http {
        Ok(http) => http,
        Err(reason) => {
            return WebhookOutcome::Failed {
                reason: reason.clone(),
            };
        }
    };
    let origin = url::Url::parse(&call.url)
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_else(|_| "an invalid URL".to_owned());
    let sent = http
        .post(&call.url)
        .timeout(call.timeout)
        .json(&call.payload)
        .send()
        .await;
    match sent {
        Ok(response) => WebhookOutcome::Answered {
            status: response.status().as_u16(),
        },
        Err(error) if error.is_timeout() => WebhookOutcome::Failed {
            reason: format!(
                "no answer from {origin} within {}",
                crate::api::duration::format_duration(call.timeout)
            ),
        },
        Err(error) if error.is_connect() => WebhookOutcome::Failed {
            reason: format!("could not connect to {origin}"),
        },
        Err(error) => WebhookOutcome::Failed {
            reason: format!(
                "request to {origin} failed: {}",
                bounded(&crate::analysis::provider::measurement::error_chain(
                    &error.without_url()
                ))
            ),
        },
    }
}

/// At most 256 bytes of `text`, cut at a character boundary.
fn bounded(text: &str) -> String {
    let mut end = text.len().min(256);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

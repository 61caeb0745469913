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
//! * Polls are bounded: [`MAX_POLL_ENTRIES`] answers kept in all, [`MAX_POLL_ENTRIES_PER_NAMESPACE`]
//!   per namespace (one namespace's overflow defers only its own polls), at most
//!   [`MAX_POLLS_IN_FLIGHT_PER_NAMESPACE`] of a namespace's polls on the wire, and at most
//!   [`MAX_POLLS_IN_FLIGHT`] in all. A deferred poll says so in its answer, which the machine
//!   shows in the Rollout's status message.
//! * **Notifications** (post-rollout, event) go through notify's delivery [`Outbox`], the one
//!   the platform started for its notifications (a
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

use tokio::sync::Semaphore;

use crate::http_client::EgressGuard;
use crate::notify::{Delivery, Enqueued, Outbox, SinkUrl};
use crate::rollout::webhooks::{
    CallKind, WEBHOOK_POLL_INTERVAL, WebhookAnswer, WebhookCall, WebhookOutcome,
};

/// Poll answers kept, at most, over all Rollouts; beyond it new polls wait for room.
pub const MAX_POLL_ENTRIES: usize = 10_000;
/// Poll answers kept, at most, per namespace (20 hooks × 50 Rollouts); beyond it that
/// namespace's new polls wait for room, and no other namespace's do.
pub const MAX_POLL_ENTRIES_PER_NAMESPACE: usize = 1_000;
/// Polls on the wire at once, at most, over all Rollouts.
pub const MAX_POLLS_IN_FLIGHT: usize = 64;
/// Polls of one namespace on the wire at once, at most: receivers that hang hold this many,
/// and other namespaces' polls still go out.
pub const MAX_POLLS_IN_FLIGHT_PER_NAMESPACE: usize = 16;
/// A poll answer nobody asked about for this long is forgotten (its Rollout is gone).
const FORGET_AFTER: Duration = Duration::from_secs(3600);

/// How the caller retries, where it delivers notifications and which destinations it may
/// reach.
#[derive(Clone, Debug)]
pub struct WebhookCallerConfig {
    /// A failed poll is asked again after this long.
    pub retry_after: Duration,
    /// The platform's notification outbox (one queue, one worker per process); `None`: the
    /// post-rollout and event hooks are not called (logged).
    pub outbox: Option<Outbox>,
    /// Which destinations polls may reach (the process' `--allow-link-local-egress`).
    pub egress: EgressGuard,
}

impl Default for WebhookCallerConfig {
    fn default() -> Self {
        WebhookCallerConfig {
            retry_after: WEBHOOK_POLL_INTERVAL / 2,
            outbox: None,
            egress: EgressGuard::default(),
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
    polls: Mutex<Polls>,
    /// Polls on the wire, over all namespaces.
    in_flight: Arc<Semaphore>,
    config: WebhookCallerConfig,
}

/// The polls kept, with the counts their bounds are checked against.
#[derive(Debug, Default)]
struct Polls {
    entries: HashMap<(String, String), PollEntry>,
    /// Per namespace: (entries kept, polls in flight).
    per_namespace: HashMap<String, (usize, usize)>,
    /// Polls refused room, by (scope, key): why, and since when (kept as long as an entry
    /// would be, at most [`MAX_POLL_ENTRIES`]).
    deferred: HashMap<(String, String), (String, Instant)>,
}

impl Polls {
    fn count(&mut self, namespace: &str) -> &mut (usize, usize) {
        self.per_namespace.entry(namespace.to_owned()).or_default()
    }

    /// Keeps the entries `keep` says yes to; the counts follow.
    fn retain(&mut self, mut keep: impl FnMut(&(String, String), &PollEntry) -> bool) {
        let per_namespace = &mut self.per_namespace;
        self.entries.retain(|id, entry| {
            let kept = keep(id, entry);
            if !kept && let Some((kept_count, _)) = per_namespace.get_mut(&entry.namespace) {
                *kept_count = kept_count.saturating_sub(1);
            }
            kept
        });
        self.per_namespace.retain(|_, (kept, _)| *kept > 0);
    }

    fn defer(&mut self, id: (String, String), reason: String, now: Instant) {
        tracing::warn!(rollout = %id.0, key = %id.1, %reason, "webhook poll deferred");
        if self.deferred.len() < MAX_POLL_ENTRIES || self.deferred.contains_key(&id) {
            self.deferred.insert(id, (reason, now));
        }
    }
}

impl Inner {
    fn http(&self) -> Result<reqwest::Client, String> {
        self.http
            .get_or_init(|| {
                // No redirect (a receiver could send the payload somewhere the Rollout never
                // named), no proxy, guarded destinations.
                crate::http_client::builder(&self.config.egress)
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
    namespace: String,
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
                polls: Mutex::new(Polls::default()),
                in_flight: Arc::new(Semaphore::new(MAX_POLLS_IN_FLIGHT)),
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
        polls.deferred.retain(|(owner, _), (_, at)| {
            !(lists_polls && owner == scope) && now.duration_since(*at) < FORGET_AFTER
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
            .entries
            .iter()
            .filter(|((owner, _), _)| owner == scope)
            .filter_map(|((_, key), entry)| {
                entry.answer.as_ref().map(|(outcome, _)| WebhookAnswer {
                    key: key.clone(),
                    outcome: outcome.clone(),
                })
            })
            .collect();
        let deferred: Vec<WebhookAnswer> = polls
            .deferred
            .iter()
            .filter(|((owner, key), _)| owner == scope && !answers.iter().any(|a| a.key == *key))
            .map(|((_, key), (reason, _))| WebhookAnswer {
                key: key.clone(),
                outcome: WebhookOutcome::Failed {
                    reason: reason.clone(),
                },
            })
            .collect();
        answers.extend(deferred);
        answers.sort_by(|a, b| a.key.cmp(&b.key));
        answers
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Polls> {
        self.inner
            .polls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn enqueue(&self, scope: &str, call: WebhookCall) {
        let Some(outbox) = &self.inner.config.outbox else {
            tracing::warn!(rollout = %scope, hook = %call.name, "webhook notification not sent: no outbox");
            return;
        };
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

    fn poll(&self, polls: &mut Polls, scope: &str, call: WebhookCall, now: Instant) {
        let id = (scope.to_owned(), call.key.clone());
        let namespace = call.payload.namespace.clone().unwrap_or_default();
        if !polls.entries.contains_key(&id) {
            let kept = polls.per_namespace.get(&namespace).map_or(0, |c| c.0);
            if kept >= MAX_POLL_ENTRIES_PER_NAMESPACE {
                let reason = format!(
                    "not asked: this namespace has {kept} webhook polls kept, the most allowed"
                );
                return polls.defer(id, reason, now);
            }
            if polls.entries.len() >= MAX_POLL_ENTRIES {
                let reason = format!(
                    "not asked: the controller keeps {MAX_POLL_ENTRIES} webhook polls, the most allowed"
                );
                return polls.defer(id, reason, now);
            }
            polls.count(&namespace).0 += 1;
        }
        polls.deferred.remove(&id);
        let retry_after = self.inner.config.retry_after;
        let in_flight_here = polls.per_namespace.get(&namespace).map_or(0, |c| c.1);
        let entry = polls.entries.entry(id.clone()).or_insert(PollEntry {
            namespace: namespace.clone(),
            answer: None,
            in_flight: false,
            asked_at: now,
        });
        entry.asked_at = now;
        let due = match &entry.answer {
            None => true,
            Some((outcome, at)) => !outcome.passed() && now.duration_since(*at) >= retry_after,
        };
        if entry.in_flight || !due {
            return;
        }
        if in_flight_here >= MAX_POLLS_IN_FLIGHT_PER_NAMESPACE {
            let reason =
                format!("not asked: this namespace has {in_flight_here} webhook polls in flight");
            tracing::warn!(rollout = %scope, hook = %call.name, %reason, "webhook poll deferred");
            entry.answer = Some((WebhookOutcome::Failed { reason }, now));
            return;
        }
        entry.in_flight = true;
        polls.count(&namespace).1 += 1;
        let inner = Arc::downgrade(&self.inner);
        let http = self.inner.http();
        let slots = Arc::clone(&self.inner.in_flight);
        let egress = self.inner.config.egress.clone();
        tokio::spawn(async move {
            // The semaphore is never closed; a poll waits here for one of the global slots.
            let permit = slots.acquire_owned().await;
            let outcome = post(&http, &egress, &call).await;
            drop(permit);
            tracing::debug!(rollout = %id.0, hook = %call.name, %outcome, "webhook answered");
            let Some(inner) = inner.upgrade() else { return };
            let mut polls = inner.polls.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(count) = polls.per_namespace.get_mut(&namespace) {
                count.1 = count.1.saturating_sub(1);
            }
            if let Some(entry) = polls.entries.get_mut(&id) {
                entry.in_flight = false;
                entry.answer = Some((outcome, Instant::now()));
            }
        });
    }
}

/// One POST of the payload; only the status code is read.
async fn post(
    http: &Result<reqwest::Client, String>,
    egress: &EgressGuard,
    call: &WebhookCall,
) -> WebhookOutcome {
    let http = match http {
        Ok(http) => http,
        Err(reason) => {
            return WebhookOutcome::Failed {
                reason: reason.clone(),
            };
        }
    };
    let url = match url::Url::parse(&call.url) {
        Ok(url) => url,
        Err(_) => {
            return WebhookOutcome::Failed {
                reason: "the webhook URL does not parse".to_owned(),
            };
        }
    };
    if let Err(refused) = egress.check_url(&url) {
        return WebhookOutcome::Failed {
            reason: refused.to_string(),
        };
    }
    let origin = url.origin().ascii_serialization();
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
        Err(error) if crate::http_client::refused_by_guard(&error).is_some() => {
            WebhookOutcome::Failed {
                reason: crate::http_client::refused_by_guard(&error)
                    .map(|refused| refused.to_string())
                    .unwrap_or_default(),
            }
        }
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

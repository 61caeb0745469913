//! Events leave the reconcile path here.
//!
//! An Event is a courtesy to whoever runs `kubectl describe`: a reconcile that waited for
//! its Events' round trips (a POST, or a series PATCH, each) spent most of its time on them
//! while the API server was busy. [`EventQueue::send`] never waits: it puts the event on a
//! bounded queue, or drops it and counts the drop when the queue is full, as client-go's
//! broadcaster does (its queue holds 1000). [`EVENT_PUBLISHERS`] worker tasks publish them
//! through the [`EventRecorder`], which folds repeats into series: the events of one object
//! always go to the same worker, so they are published in the order they were sent, and a
//! burst of many objects' events is published many at a time. An Event carries the time it
//! was sent, so waiting in the queue does not move it; it may appear after the status write
//! it describes, and what is still queued when the process dies is lost.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ObjectReference;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use super::events::{EventNote, EventRecorder};

/// Events waiting to be published, at most, per worker; more are dropped (and counted).
pub const EVENT_QUEUE_CAPACITY: usize = 256;

/// Workers publishing at once: 16 × 256 events waiting at most, about 2 MB.
pub const EVENT_PUBLISHERS: usize = 16;

/// The longest one publication may take: a request that hangs holds its worker (and the
/// objects queued behind it) no longer than this.
pub const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);

const _: () = assert!(EVENT_PUBLISHERS > 0 && EVENT_QUEUE_CAPACITY > 0);

enum Queued {
    /// Boxed: a flush marker need not be the size of an event.
    Publish(Box<(EventNote, ObjectReference, Timestamp)>),
    /// Answered once every event queued before it was published (or failed).
    Flush(oneshot::Sender<()>),
}

/// Publishes events from background tasks, each object's in the order they were sent.
#[derive(Clone)]
pub struct EventQueue {
    lanes: Vec<mpsc::Sender<Queued>>,
    recorder: Arc<EventRecorder>,
    dropped: Counter,
}

impl EventQueue {
    /// Starts the workers that publish through `recorder`; `dropped` counts the events that
    /// found their queue full.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime (the workers are spawned on the current one).
    pub fn start(recorder: EventRecorder, dropped: Counter) -> EventQueue {
        let recorder = Arc::new(recorder);
        let lanes = (0..EVENT_PUBLISHERS)
            .map(|_| {
                let (sender, receiver) = mpsc::channel(EVENT_QUEUE_CAPACITY);
                tokio::spawn(publish_all(receiver, recorder.clone()));
                sender
            })
            .collect();
        EventQueue {
            lanes,
            recorder,
            dropped,
        }
    }

    /// The worker of the object `regarding`: always the same one.
    fn lane(&self, regarding: &ObjectReference) -> &mpsc::Sender<Queued> {
        let mut hasher = std::hash::DefaultHasher::new();
        (&regarding.namespace, &regarding.name, &regarding.uid).hash(&mut hasher);
        let at = usize::try_from(hasher.finish() % self.lanes.len() as u64).unwrap_or(0);
        &self.lanes[at]
    }

    /// Queues `event` about `regarding`, happening now, without waiting; a full queue drops
    /// it (counted in `vigil_events_dropped_total`: under a burst that is the signal, a log
    /// line per drop would add to the load).
    pub fn send(&self, event: EventNote, regarding: ObjectReference) {
        let lane = self.lane(&regarding);
        let queued = Queued::Publish(Box::new((event, regarding, Timestamp::now())));
        match lane.try_send(queued) {
            Ok(()) => {}
            Err(TrySendError::Full(Queued::Publish(dropped))) => {
                self.dropped.inc();
                debug!(reason = %dropped.0.reason, regarding = ?dropped.1.name, "event queue full; event dropped");
            }
            Err(TrySendError::Full(Queued::Flush(_)) | TrySendError::Closed(_)) => {
                self.dropped.inc();
                warn!("event publisher stopped; event dropped");
            }
        }
    }

    /// Waits until every event sent before this call was published or failed.
    pub async fn flush(&self) {
        for lane in &self.lanes {
            let (done, flushed) = oneshot::channel();
            if lane.send(Queued::Flush(done)).await.is_ok() {
                let _ = flushed.await;
            }
        }
    }

    /// How many event keys the recorder remembers for series.
    pub fn remembered(&self) -> usize {
        self.recorder.remembered()
    }
}

async fn publish_all(mut queue: mpsc::Receiver<Queued>, recorder: Arc<EventRecorder>) {
    while let Some(queued) = queue.recv().await {
        match queued {
            Queued::Publish(queued) => {
                let (event, regarding, at) = *queued;
                // Logged, never retried: failing here must not hold the events behind it.
                let published = recorder.publish_at(&event, &regarding, at);
                match tokio::time::timeout(PUBLISH_TIMEOUT, published).await {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => {
                        warn!(%error, reason = %event.reason, "cannot publish event");
                    }
                    Err(_) => warn!(reason = %event.reason, "publishing an event timed out"),
                }
            }
            Queued::Flush(done) => {
                let _ = done.send(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::kubernetes::events::EventType;

    const EVENTS: &str = "events.k8s.io/v1/events";

    fn regarding(name: &str) -> ObjectReference {
        ObjectReference {
            api_version: Some("vigil.dev/v1alpha1".into()),
            kind: Some("Rollout".into()),
            namespace: Some("shop".into()),
            name: Some(name.into()),
            uid: Some(format!("uid-{name}")),
            ..Default::default()
        }
    }

    fn note(reason: &str) -> EventNote {
        EventNote {
            type_: EventType::Normal,
            reason: reason.into(),
            action: reason.into(),
            note: format!("{reason} happened"),
        }
    }

    /// Against the API test server: `send` returns at once, the worker publishes every event
    /// in order (a repeat folds into the series of the first), and `flush` waits for it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sent_events_are_published_in_order_by_the_worker() {
        let server = crate::testing::apiserver::ApiServer::start();
        let recorder = EventRecorder::new(server.client(), "vigil-controller", None);
        let dropped = Counter::default();
        let queue = EventQueue::start(recorder, dropped.clone());
        for reason in ["Progressing", "Paused", "Progressing", "Healthy"] {
            queue.send(note(reason), regarding("web"));
        }
        queue.flush().await;
        let mut events = server.list_json(EVENTS, Some("shop"));
        events.sort_by_key(|e| e["eventTime"].as_str().unwrap_or_default().to_owned());
        let reasons: Vec<_> = events.iter().map(|e| e["reason"].clone()).collect();
        assert_eq!(reasons, ["Progressing", "Paused", "Healthy"], "{events:#?}");
        assert_eq!(events[0]["series"]["count"], 2, "{:#?}", events[0]);
        assert_eq!(queue.remembered(), 3);
        assert_eq!(dropped.get(), 0);
    }

    /// A queue that cannot keep up drops what does not fit and counts it; `send` never
    /// waits, whatever the API server does.
    #[tokio::test(flavor = "current_thread")]
    async fn a_full_queue_drops_and_counts_without_waiting() {
        let server = crate::testing::apiserver::ApiServer::start();
        let recorder = EventRecorder::new(server.client(), "vigil-controller", None);
        let dropped = Counter::default();
        let queue = EventQueue::start(recorder, dropped.clone());
        // On a current-thread runtime the workers cannot run until this test yields; one
        // object's events all wait for the same worker (distinct reasons: no series).
        let extra = 5;
        for i in 0..EVENT_QUEUE_CAPACITY + extra {
            queue.send(note(&format!("Step{i}")), regarding("web"));
        }
        assert_eq!(dropped.get(), extra as u64);
        queue.flush().await;
        let events = server.list_json(EVENTS, Some("shop"));
        assert_eq!(events.len(), EVENT_QUEUE_CAPACITY);
    }
}

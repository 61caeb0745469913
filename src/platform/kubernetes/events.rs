//! `events.k8s.io/v1` events with bounded memory.
//!
//! Kubernetes folds an event that repeats (same regarding object, type, reason and action
//! within a few minutes) into a series on the first Event object instead of creating a new
//! one, as client-go's event broadcaster does. kube's `events::Recorder` keeps the whole
//! last Event of every key for 6 minutes in a map that never shrinks: a release of 10,000
//! Rollouts publishes ~30,000 events, ~100 MB of a controller that otherwise needs ~150.
//! This recorder keeps only what a series patch needs (the Event's name, the count and when
//! it was last seen), for at most [`SERIES_TTL`] and at most [`SERIES_CAPACITY`] keys,
//! evicting the least recently seen: a repeat of an evicted key starts a new Event, exactly
//! as a repeat after the TTL does.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

/// How long a published event can still grow a series (client-go's and kube's: 6 minutes).
pub const SERIES_TTL: SignedDuration = SignedDuration::from_mins(6);

/// The most event keys remembered at once (a few MB at most). Beyond it the least recently
/// seen key is forgotten, so only a burst of more distinct events than this within
/// [`SERIES_TTL`] loses folding, and then only for the oldest of them.
pub const SERIES_CAPACITY: usize = 8192;

/// Normal or Warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// Something happened as intended.
    Normal,
    /// Something an operator may need to look at.
    Warning,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// One event about an object.
#[derive(Debug, Clone)]
pub struct EventNote {
    /// Normal or Warning.
    pub type_: EventType,
    /// Why (UpperCamelCase, e.g. `RolloutCompleted`).
    pub reason: String,
    /// What was done (vigil uses the reason).
    pub action: String,
    /// The human-readable message (at most 1 kB, as the API server requires).
    pub note: String,
}

/// What identifies a repeat: client-go's key (type, reason, action, reporter, regarding
/// object) flattened into one string, shared by the map and the recency order.
type SeriesKey = Arc<str>;

fn series_key(event: &EventNote, reporter: &str, regarding: &ObjectReference) -> SeriesKey {
    let text = |s: &Option<String>| s.clone().unwrap_or_default();
    // The separator cannot occur in a reason, a name or a uid.
    [
        event.type_.as_str().to_owned(),
        event.reason.clone(),
        event.action.clone(),
        reporter.to_owned(),
        text(&regarding.api_version),
        text(&regarding.kind),
        text(&regarding.namespace),
        text(&regarding.name),
        text(&regarding.uid),
    ]
    .join("\u{0}")
    .into()
}

/// What publishing an event takes: a new Event, or counting it in the series of an earlier
/// one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Publication {
    /// Create a new Event.
    Create,
    /// Patch the series of the Event `name` to `count` occurrences.
    Series {
        /// The earlier Event's name.
        name: String,
        /// Occurrences so far, this one included.
        count: i32,
    },
}

#[derive(Debug)]
struct Remembered {
    name: Box<str>,
    count: i32,
    last_seen: (Timestamp, u64),
}

/// The recently published events, bounded in time and in number (pure: time is passed in).
#[derive(Debug)]
pub struct SeriesCache {
    capacity: usize,
    ttl: SignedDuration,
    entries: HashMap<SeriesKey, Remembered>,
    /// The keys by when they were last seen (with a sequence number to keep ties apart).
    by_last_seen: BTreeMap<(Timestamp, u64), SeriesKey>,
    sequence: u64,
}

impl SeriesCache {
    /// At most `capacity` (at least 1) keys, each for `ttl` after it was last seen.
    pub fn new(capacity: usize, ttl: SignedDuration) -> SeriesCache {
        SeriesCache {
            capacity: capacity.max(1),
            ttl,
            entries: HashMap::new(),
            by_last_seen: BTreeMap::new(),
            sequence: 0,
        }
    }

    /// How many keys are remembered.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// How many keys the map has room for without growing (it shrinks as keys expire).
    pub fn allocated(&self) -> usize {
        self.entries.capacity()
    }

    /// What publishing `key` at `now` takes (forgets what expired first).
    fn plan(&mut self, key: &SeriesKey, now: Timestamp) -> Publication {
        self.expire(now);
        match self.entries.get(key) {
            Some(known) => Publication::Series {
                name: known.name.to_string(),
                count: known.count.saturating_add(1),
            },
            None => Publication::Create,
        }
    }

    /// Remembers that the Event `name` of `key` counts `count` occurrences, the last at
    /// `now`, evicting the least recently seen key when full.
    fn remember(&mut self, key: SeriesKey, name: &str, count: i32, now: Timestamp) {
        self.forget(&key);
        while self.entries.len() >= self.capacity {
            let Some((_, oldest)) = self.by_last_seen.pop_first() else {
                break;
            };
            self.entries.remove(&oldest);
        }
        self.sequence = self.sequence.wrapping_add(1);
        let last_seen = (now, self.sequence);
        self.by_last_seen.insert(last_seen, key.clone());
        self.entries.insert(
            key,
            Remembered {
                name: name.into(),
                count,
                last_seen,
            },
        );
    }

    fn forget(&mut self, key: &SeriesKey) {
        if let Some(known) = self.entries.remove(key) {
            self.by_last_seen.remove(&known.last_seen);
        }
    }

    /// Forgets every key last seen [`SERIES_TTL`] or more before `now`, and gives memory
    /// back once the map is mostly empty (a `HashMap` never shrinks by itself).
    fn expire(&mut self, now: Timestamp) {
        while let Some(entry) = self.by_last_seen.first_entry() {
            if entry.key().0 + self.ttl > now {
                break;
            }
            let key = entry.remove();
            self.entries.remove(&key);
        }
        if self.entries.capacity() > 64 && self.entries.len() < self.entries.capacity() / 4 {
            self.entries.shrink_to(self.entries.len() * 2);
        }
    }

    /// Publishes `key` at `now` as far as the cache is concerned: the plan, remembered as
    /// if it succeeded (for tests of the bound; the recorder remembers only successes).
    #[cfg(test)]
    fn observe(&mut self, key: &str, now: Timestamp) -> Publication {
        let key: SeriesKey = key.into();
        let plan = self.plan(&key, now);
        let (name, count) = match &plan {
            Publication::Create => (format!("{key}.{}", now.as_nanosecond()), 1),
            Publication::Series { name, count } => (name.clone(), *count),
        };
        self.remember(key, &name, count, now);
        plan
    }
}

/// Publishes events as `reporter` (`reportingController`) from `instance`, folding repeats
/// into series within [`SERIES_TTL`], remembering at most [`SERIES_CAPACITY`] keys.
pub struct EventRecorder {
    client: Client,
    controller: String,
    instance: String,
    series: Mutex<SeriesCache>,
}

impl EventRecorder {
    /// A recorder for `client`, reporting as `controller` from `instance` (default: the
    /// controller's name, as kube does).
    pub fn new(client: Client, controller: &str, instance: Option<String>) -> EventRecorder {
        EventRecorder {
            client,
            controller: controller.to_owned(),
            instance: instance.unwrap_or_else(|| controller.to_owned()),
            series: Mutex::new(SeriesCache::new(SERIES_CAPACITY, SERIES_TTL)),
        }
    }

    fn series(&self) -> std::sync::MutexGuard<'_, SeriesCache> {
        // A poisoned cache is still a valid cache: each change is whole before it is seen.
        self.series
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// How many event keys are remembered for series.
    pub fn remembered(&self) -> usize {
        self.series().len()
    }

    /// Publishes `event` about `regarding`, happening now: see [`EventRecorder::publish_at`].
    pub async fn publish(
        &self,
        event: &EventNote,
        regarding: &ObjectReference,
    ) -> Result<(), kube::Error> {
        self.publish_at(event, regarding, Timestamp::now()).await
    }

    /// Publishes `event` about `regarding`, which happened at `now`: a new Event, or one more
    /// occurrence in the series of the Event published for the same key within
    /// [`SERIES_TTL`]. A series whose Event is gone (deleted, or expired on the server)
    /// starts a new Event.
    pub async fn publish_at(
        &self,
        event: &EventNote,
        regarding: &ObjectReference,
        now: Timestamp,
    ) -> Result<(), kube::Error> {
        let key = series_key(event, &self.controller, regarding);
        let plan = self.series().plan(&key, now);
        let namespace = regarding.namespace.as_deref().unwrap_or("default");
        let api: Api<Event> = Api::namespaced(self.client.clone(), namespace);
        if let Publication::Series { name, count } = plan {
            let patch = json!({"series": {"count": count, "lastObservedTime": MicroTime(now)}});
            match api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    self.series().remember(key, &name, count, now);
                    return Ok(());
                }
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(error) => return Err(error),
            }
        }
        let created = self.new_event(event, regarding, now);
        let name = created.metadata.name.clone().unwrap_or_default();
        api.create(&PostParams::default(), &created).await?;
        self.series().remember(key, &name, 1, now);
        Ok(())
    }

    fn new_event(&self, event: &EventNote, regarding: &ObjectReference, now: Timestamp) -> Event {
        let prefix = regarding.name.as_deref().unwrap_or(&self.controller);
        Event {
            action: Some(event.action.clone()),
            reason: Some(event.reason.clone()),
            note: Some(event.note.clone()),
            type_: Some(event.type_.as_str().to_owned()),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            metadata: ObjectMeta {
                namespace: regarding.namespace.clone(),
                name: Some(format!("{prefix}.{:x}", now.as_nanosecond())),
                ..Default::default()
            },
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + seconds).expect("timestamp")
    }

    #[test]
    fn a_repeat_within_the_ttl_counts_in_the_series_of_the_first_event() {
        let mut cache = SeriesCache::new(16, SERIES_TTL);
        assert_eq!(cache.observe("web/Progressing", at(0)), Publication::Create);
        let Publication::Series { name, count } = cache.observe("web/Progressing", at(60)) else {
            panic!("a repeat folds into a series");
        };
        assert_eq!(count, 2);
        assert!(name.starts_with("web/Progressing."), "{name}");
        // Counted from the last occurrence: 5 minutes after the second is still a series.
        assert_eq!(
            cache.observe("web/Progressing", at(60 + 300)),
            Publication::Series { name, count: 3 }
        );
        assert_eq!(
            cache.observe("cart/Progressing", at(360)),
            Publication::Create
        );
        // Six minutes of silence end the series.
        assert_eq!(
            cache.observe("web/Progressing", at(360 + 360)),
            Publication::Create
        );
    }

    #[test]
    fn the_cache_never_holds_more_than_its_capacity_and_forgets_the_oldest() {
        let mut cache = SeriesCache::new(100, SERIES_TTL);
        for i in 0..1000 {
            assert_eq!(
                cache.observe(&format!("rollout-{i}"), at(0)),
                Publication::Create
            );
            assert!(cache.len() <= 100, "{} keys after {i}", cache.len());
        }
        assert_eq!(cache.len(), 100);
        assert!(matches!(
            cache.observe("rollout-999", at(1)),
            Publication::Series { count: 2, .. }
        ));
        assert_eq!(
            cache.observe("rollout-0", at(1)),
            Publication::Create,
            "the least recently seen key was evicted"
        );
        // A key seen again moves to the back: it outlives keys first seen after it.
        cache.observe("rollout-950", at(2));
        for i in 0..99 {
            cache.observe(&format!("later-{i}"), at(3));
        }
        assert!(matches!(
            cache.observe("rollout-950", at(4)),
            Publication::Series { count: 3, .. }
        ));
        assert_eq!(cache.observe("rollout-951", at(4)), Publication::Create);
    }

    #[test]
    fn expired_keys_are_forgotten_and_their_memory_given_back() {
        let mut cache = SeriesCache::new(100_000, SERIES_TTL);
        for i in 0..50_000 {
            cache.observe(&format!("rollout-{i}"), at(0));
        }
        let grown = cache.allocated();
        assert!(grown >= 50_000);
        // The burst is over; one event later it is all gone, and so is the room it took.
        cache.observe("quiet", at(361));
        assert_eq!(cache.len(), 1);
        assert!(cache.by_last_seen.len() == 1);
        assert!(
            cache.allocated() < grown / 100,
            "{} of {grown} slots kept",
            cache.allocated()
        );
    }

    #[test]
    fn keys_differ_by_type_reason_and_regarding_object() {
        let regarding = |name: &str, uid: &str| ObjectReference {
            api_version: Some("vigil.dev/v1alpha1".into()),
            kind: Some("Rollout".into()),
            namespace: Some("shop".into()),
            name: Some(name.into()),
            uid: Some(uid.into()),
            ..Default::default()
        };
        let note = |type_, reason: &str| EventNote {
            type_,
            reason: reason.into(),
            action: reason.into(),
            note: "whatever".into(),
        };
        let base = series_key(
            &note(EventType::Normal, "Paused"),
            "vigil",
            &regarding("web", "1"),
        );
        let same_other_note = series_key(
            &EventNote {
                note: "another message".into(),
                ..note(EventType::Normal, "Paused")
            },
            "vigil",
            &regarding("web", "1"),
        );
        assert_eq!(base, same_other_note, "the message is not part of the key");
        for other in [
            series_key(
                &note(EventType::Warning, "Paused"),
                "vigil",
                &regarding("web", "1"),
            ),
            series_key(
                &note(EventType::Normal, "Resumed"),
                "vigil",
                &regarding("web", "1"),
            ),
            series_key(
                &note(EventType::Normal, "Paused"),
                "other",
                &regarding("web", "1"),
            ),
            series_key(
                &note(EventType::Normal, "Paused"),
                "vigil",
                &regarding("cart", "1"),
            ),
            // Deleted and created again under the same name: a new object, a new series.
            series_key(
                &note(EventType::Normal, "Paused"),
                "vigil",
                &regarding("web", "2"),
            ),
        ] {
            assert_ne!(base, other);
        }
    }

    /// Against the API test server: a repeat patches the first Event's series; once that
    /// Event is gone, the next repeat creates a new one.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn repeats_patch_the_series_and_a_vanished_event_is_created_again() {
        const EVENTS: &str = "events.k8s.io/v1/events";
        let server = crate::testing::apiserver::ApiServer::start();
        let recorder = EventRecorder::new(server.client(), "vigil-controller", None);
        let regarding = ObjectReference {
            api_version: Some("vigil.dev/v1alpha1".into()),
            kind: Some("Rollout".into()),
            namespace: Some("shop".into()),
            name: Some("web".into()),
            uid: Some("uid-web".into()),
            ..Default::default()
        };
        let paused = EventNote {
            type_: EventType::Normal,
            reason: "Paused".into(),
            action: "Paused".into(),
            note: "paused at step 2".into(),
        };
        for _ in 0..3 {
            recorder
                .publish(&paused, &regarding)
                .await
                .expect("publish");
        }
        let events = server.list_json(EVENTS, Some("shop"));
        assert_eq!(events.len(), 1, "{events:#?}");
        let first = &events[0];
        assert_eq!(first["series"]["count"], 3);
        assert_eq!(first["note"], "paused at step 2");
        assert_eq!(first["reportingController"], "vigil-controller");
        assert_eq!(first["reportingInstance"], "vigil-controller");
        assert_eq!(first["regarding"]["uid"], "uid-web");
        assert_eq!(recorder.remembered(), 1);

        let name = first["metadata"]["name"].as_str().expect("name").to_owned();
        server
            .delete_json(EVENTS, Some("shop"), &name)
            .expect("delete the event");
        recorder
            .publish(&paused, &regarding)
            .await
            .expect("publish");
        let events = server.list_json(EVENTS, Some("shop"));
        assert_eq!(events.len(), 1, "{events:#?}");
        assert_ne!(events[0]["metadata"]["name"], name.as_str());
        assert!(events[0]["series"].is_null(), "{:#?}", events[0]);
    }
}

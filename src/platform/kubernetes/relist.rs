//! What a re-list changed. A watch that restarts (its resourceVersion expired, the API
//! server restarted) lists its kind again: the events missed in between arrive as one list,
//! not as changes. Comparing the list with the store as it stood before tells which objects
//! appeared, changed or vanished meanwhile, so exactly their Rollouts (and AnalysisRuns) are
//! woken, and nobody else: a re-list of 10,000 unchanged objects wakes nothing.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

use kube::Resource;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;

/// Follows one watch's events (fed before the store applies them) and collects, at the end
/// of every list but the first, the objects that differ from the store's previous contents:
/// the listed version of a new or changed object, the last known version of one that is gone.
pub struct RelistDiff<K: Resource + 'static>
where
    K::DynamicType: std::hash::Hash + Eq + Clone,
{
    /// The store before each event is applied.
    before: Store<K>,
    dyntype: K::DynamicType,
    /// A list in progress: what it named so far, and what differed.
    listing: Option<Listing<K>>,
    /// Whether a list has ended before (the first one is the start, not a re-list).
    listed_once: bool,
    /// The differences of the last re-list, taken once the store has applied it.
    ready: Changed<K>,
}

struct Listing<K: Resource + 'static>
where
    K::DynamicType: std::hash::Hash + Eq + Clone,
{
    seen: HashSet<ObjectRef<K>>,
    changed: Vec<K>,
}

/// The objects a re-list found changed, handed from the stage before the store to the stage
/// after it (so whoever is woken reads the new contents).
pub type Changed<K> = Arc<Mutex<Vec<K>>>;

impl<K> RelistDiff<K>
where
    K: Resource + Clone + 'static,
    K::DynamicType: std::hash::Hash + Eq + Clone,
{
    /// A diff against `before`, the reader of the store the events go to.
    pub fn new(before: Store<K>, dyntype: K::DynamicType) -> RelistDiff<K> {
        RelistDiff {
            before,
            dyntype,
            listing: None,
            listed_once: false,
            ready: Changed::default(),
        }
    }

    /// Where the differences of each finished re-list are put.
    pub fn changed(&self) -> Changed<K> {
        self.ready.clone()
    }

    fn reference(&self, object: &K) -> ObjectRef<K> {
        ObjectRef::from_obj_with(object, self.dyntype.clone())
    }

    /// Feeds one event, before the store applies it.
    pub fn observe(&mut self, event: &watcher::Event<K>) {
        match event {
            watcher::Event::Init => {
                self.listing = self.listed_once.then(|| Listing {
                    seen: HashSet::new(),
                    changed: Vec::new(),
                });
            }
            watcher::Event::InitApply(object) => {
                let reference = self.reference(object);
                let known = self.before.get(&reference);
                if let Some(listing) = self.listing.as_mut() {
                    let same = known.is_some_and(|known| {
                        known.meta().resource_version == object.meta().resource_version
                    });
                    if !same {
                        listing.changed.push(object.clone());
                    }
                    listing.seen.insert(reference);
                }
            }
            watcher::Event::InitDone => {
                self.listed_once = true;
                if let Some(mut listing) = self.listing.take() {
                    for known in self.before.state() {
                        if !listing.seen.contains(&self.reference(&known)) {
                            listing.changed.push(Arc::unwrap_or_clone(known));
                        }
                    }
                    self.ready
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .extend(listing.changed);
                }
            }
            watcher::Event::Apply(_) | watcher::Event::Delete(_) => {}
        }
    }
}

/// Takes the differences collected so far.
pub fn take<K>(changed: &Changed<K>) -> Vec<K> {
    std::mem::take(&mut *changed.lock().unwrap_or_else(PoisonError::into_inner))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::runtime::reflector::store::Writer;

    use super::*;

    fn config_map(name: &str, version: &str) -> ConfigMap {
        let mut object = ConfigMap::default();
        object.metadata.name = Some(name.into());
        object.metadata.namespace = Some("shop".into());
        object.metadata.resource_version = Some(version.into());
        object
    }

    /// Feeds `events` through the diff and then the store, as the watch pipeline does.
    fn feed(
        diff: &mut RelistDiff<ConfigMap>,
        writer: &mut Writer<ConfigMap>,
        events: Vec<watcher::Event<ConfigMap>>,
    ) {
        for event in events {
            diff.observe(&event);
            writer.apply_watcher_event(&event);
        }
    }

    fn list(objects: &[ConfigMap]) -> Vec<watcher::Event<ConfigMap>> {
        let mut events = vec![watcher::Event::Init];
        events.extend(objects.iter().cloned().map(watcher::Event::InitApply));
        events.push(watcher::Event::InitDone);
        events
    }

    fn names(changed: Vec<ConfigMap>) -> Vec<(String, String)> {
        let mut names: Vec<_> = changed
            .into_iter()
            .map(|c| {
                (
                    c.metadata.name.unwrap_or_default(),
                    c.metadata.resource_version.unwrap_or_default(),
                )
            })
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_relist_reports_what_appeared_changed_or_vanished_and_nothing_else() {
        let mut writer = Writer::<ConfigMap>::default();
        let mut diff = RelistDiff::new(writer.as_reader(), ());
        let changed = diff.changed();
        let first = [
            config_map("kept", "1"),
            config_map("edited", "2"),
            config_map("gone", "3"),
        ];
        feed(&mut diff, &mut writer, list(&first));
        assert!(take(&changed).is_empty(), "the first list is the start");
        // Between lists, a live event: applied, never reported by the diff.
        feed(
            &mut diff,
            &mut writer,
            vec![watcher::Event::Apply(config_map("live", "4"))],
        );
        assert!(take(&changed).is_empty());
        let second = [
            config_map("kept", "1"),
            config_map("edited", "7"),
            config_map("live", "4"),
            config_map("new", "8"),
        ];
        feed(&mut diff, &mut writer, list(&second));
        assert_eq!(
            names(take(&changed)),
            [
                ("edited".to_owned(), "7".to_owned()),
                ("gone".to_owned(), "3".to_owned()),
                ("new".to_owned(), "8".to_owned()),
            ]
        );
        // The same list again: nothing changed.
        feed(&mut diff, &mut writer, list(&second));
        assert!(take(&changed).is_empty());
    }
}

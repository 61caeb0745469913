//! Whether each watch behind the controller's caches has synced and keeps working, for
//! `/readyz`, the `vigil_watch_errors_total` metric and warnings in the log. A watch the
//! API server refuses (RBAC, a CRD removed) would otherwise leave Rollouts waiting in silence.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use futures::{Stream, StreamExt as _};
use kube::runtime::watcher;
use tracing::{info, warn};

use crate::metrics::Metrics;

/// The longest error text `/readyz` repeats per watch.
const MAX_ERROR_LEN: usize = 300;

/// The state of one watch.
#[derive(Debug, Clone, PartialEq, Eq)]
enum WatchState {
    /// Listing for the first time.
    Syncing,
    /// Listed, and the stream works.
    Synced,
    /// The last attempt failed with this error (retried with backoff).
    Failing(String),
}

/// The watches of the controller, by resource (e.g. `ReplicaSet`), shared with `/readyz`.
#[derive(Debug, Clone, Default)]
pub struct WatchHealth(Arc<Mutex<BTreeMap<String, WatchState>>>);

impl WatchHealth {
    fn map(&self) -> MutexGuard<'_, BTreeMap<String, WatchState>> {
        // A poisoned map of states is still a valid map of states.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Starts tracking the watch of `resource` (not synced yet).
    pub fn register(&self, resource: &str) {
        self.map()
            .entry(resource.to_owned())
            .or_insert(WatchState::Syncing);
    }

    /// Stops tracking the watch of `resource` (it was stopped on purpose: its CRD is gone).
    pub fn forget(&self, resource: &str) {
        self.map().remove(resource);
    }

    fn set(&self, resource: &str, state: WatchState) {
        self.map().insert(resource.to_owned(), state);
    }

    /// What keeps the controller from being ready: one line per watch that has not synced
    /// or is failing. Empty when every watch works.
    pub fn problems(&self) -> Vec<String> {
        self.map()
            .iter()
            .filter_map(|(resource, state)| match state {
                WatchState::Synced => None,
                WatchState::Syncing => Some(format!("watch {resource}: not synced yet")),
                WatchState::Failing(error) => Some(format!("watch {resource}: failing: {error}")),
            })
            .collect()
    }

    /// Whether the watch of `resource` has listed and works now.
    pub fn is_synced(&self, resource: &str) -> bool {
        self.map().get(resource) == Some(&WatchState::Synced)
    }
}

/// What a watch stream's events say about it, recorded in `health` and `metrics` as they
/// pass: synced at the end of each (re)list, failing at each error (logged at warn; the
/// stream's own backoff spaces the retries).
pub fn observed<K, S>(
    stream: S,
    resource: &'static str,
    health: WatchHealth,
    metrics: Metrics,
) -> impl Stream<Item = watcher::Result<watcher::Event<K>>>
where
    S: Stream<Item = watcher::Result<watcher::Event<K>>>,
{
    health.register(resource);
    stream.inspect(move |event| match event {
        Ok(watcher::Event::InitDone | watcher::Event::Apply(_) | watcher::Event::Delete(_)) => {
            if !health.is_synced(resource) {
                info!(resource, "watch synced");
                health.set(resource, WatchState::Synced);
            }
        }
        Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
        Err(error) => {
            metrics.watch_failed(resource);
            warn!(resource, %error, "watch failed; retrying with backoff");
            let mut text = error.to_string();
            if text.len() > MAX_ERROR_LEN {
                let mut cut = MAX_ERROR_LEN;
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                text.truncate(cut);
            }
            health.set(resource, WatchState::Failing(text));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_failing_watch_is_a_problem_until_it_lists_again() {
        let health = WatchHealth::default();
        let metrics = Metrics::default();
        let events: Vec<watcher::Result<watcher::Event<k8s_openapi::api::core::v1::Service>>> = vec![
            Ok(watcher::Event::Init),
            Ok(watcher::Event::InitDone),
            Err(watcher::Error::NoResourceVersion),
        ];
        let stream = observed(
            futures::stream::iter(events),
            "Service",
            health.clone(),
            metrics.clone(),
        );
        futures::pin_mut!(stream);
        assert_eq!(health.problems(), ["watch Service: not synced yet"]);
        stream.next().await;
        stream.next().await;
        assert!(health.problems().is_empty(), "{:?}", health.problems());
        assert!(health.is_synced("Service"));
        stream.next().await;
        let problems = health.problems();
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].starts_with("watch Service: failing: "),
            "{problems:?}"
        );
        assert!(
            metrics
                .encode()
                .contains("vigil_watch_errors_total{resource=\"Service\"} 1"),
            "{}",
            metrics.encode()
        );
    }
}

//! DORA figures on `/metrics`, per namespace: releases started, promoted and rolled back,
//! release duration, and time from a failing verdict to all traffic on stable. The namespace
//! label is bounded: past [`MAX_NAMESPACES`] namespaces the rest count as `other`.
//!
//! The controller keeps each Rollout's [`History`] in memory to know when its open release
//! started (see `crate::dora`).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use jiff::Timestamp;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::api::RolloutStatus;
use crate::dora::{History, Observed, Outcome, changes};

/// Namespaces that get a label of their own; the rest count as [`OTHER_NAMESPACE`].
pub const MAX_NAMESPACES: usize = 64;
/// The label of namespaces past the cap.
pub const OTHER_NAMESPACE: &str = "other";

/// The names of every series these metrics export (for the Grafana dashboard's test).
pub const EXPORTED: &[&str] = &[
    "vigil_releases_started_total",
    "vigil_releases_promoted_total",
    "vigil_releases_rolled_back_total",
    "vigil_release_duration_seconds_bucket",
    "vigil_release_duration_seconds_sum",
    "vigil_release_duration_seconds_count",
    "vigil_time_to_restore_seconds_bucket",
    "vigil_time_to_restore_seconds_sum",
    "vigil_time_to_restore_seconds_count",
];

/// Labels of the release counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NamespaceLabels {
    /// The Rollout's namespace (or `other`).
    pub namespace: String,
}

/// Labels of the release duration.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// The Rollout's namespace (or `other`).
    pub namespace: String,
    /// `promoted` or `rolled_back`.
    pub outcome: String,
}

fn duration_histogram() -> Histogram {
    // 30 s to about 17 h.
    Histogram::new([
        30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 61440.0,
    ])
}

fn restore_histogram() -> Histogram {
    // 0.5 s to about 17 min.
    Histogram::new([
        0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1024.0,
    ])
}

/// The DORA metrics and the open release of each Rollout.
#[derive(Clone)]
pub struct DoraMetrics {
    started: Family<NamespaceLabels, Counter>,
    promoted: Family<NamespaceLabels, Counter>,
    rolled_back: Family<NamespaceLabels, Counter>,
    duration: Family<OutcomeLabels, Histogram, fn() -> Histogram>,
    restore: Family<NamespaceLabels, Histogram, fn() -> Histogram>,
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    histories: HashMap<String, History>,
    namespaces: HashSet<String>,
}

impl DoraMetrics {
    /// Registers the metrics under `registry`'s prefix.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = DoraMetrics {
            started: Family::default(),
            promoted: Family::default(),
            rolled_back: Family::default(),
            duration: Family::new_with_constructor(duration_histogram),
            restore: Family::new_with_constructor(restore_histogram),
            state: Arc::default(),
        };
        registry.register(
            "releases_started",
            "Releases started (new canary revisions and retries), by namespace",
            metrics.started.clone(),
        );
        registry.register(
            "releases_promoted",
            "Releases whose canary became stable, by namespace",
            metrics.promoted.clone(),
        );
        registry.register(
            "releases_rolled_back",
            "Releases rolled back (failed analysis, missed deadline, abort), by namespace",
            metrics.rolled_back.clone(),
        );
        registry.register(
            "release_duration_seconds",
            "From a release's start to its promotion or rollback, by namespace and outcome",
            metrics.duration.clone(),
        );
        registry.register(
            "time_to_restore_seconds",
            "From the failing verdict to all traffic on stable, by namespace",
            metrics.restore.clone(),
        );
        metrics
    }

    /// Counts what changed between the status `before` and the status `after` stored at `now`
    /// for the Rollout `name` in `namespace`.
    pub fn record(
        &self,
        namespace: &str,
        name: &str,
        before: &RolloutStatus,
        after: &RolloutStatus,
        now: Timestamp,
    ) {
        let found = changes(before, after, now);
        if found.is_empty() {
            return;
        }
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let label = bounded_namespace(&mut state.namespaces, namespace);
        let history = state
            .histories
            .entry(format!("{namespace}/{name}"))
            .or_default();
        let observed = history.apply(&found, now);
        // What the next change needs is the newest release (its start, its outcome); the
        // whole history is the Rollout's status and `vigil history`'s. Kept whole, it would
        // grow with every release of every Rollout.
        history.keep_last(1);
        drop(state);
        let labels = NamespaceLabels { namespace: label };
        for observation in observed {
            self.observe(&labels, &observation);
        }
    }

    fn observe(&self, labels: &NamespaceLabels, observation: &Observed) {
        match observation {
            Observed::Started => {
                self.started.get_or_create(labels).inc();
            }
            Observed::Ended {
                outcome,
                duration_seconds,
            } => {
                let (counter, word) = match outcome {
                    Outcome::Promoted => (&self.promoted, "promoted"),
                    _ => (&self.rolled_back, "rolled_back"),
                };
                counter.get_or_create(labels).inc();
                if let Some(seconds) = duration_seconds {
                    self.duration
                        .get_or_create(&OutcomeLabels {
                            namespace: labels.namespace.clone(),
                            outcome: word.to_owned(),
                        })
                        .observe(*seconds);
                }
            }
            Observed::Restored { seconds } => {
                self.restore.get_or_create(labels).observe(*seconds);
            }
        }
    }

    /// Forgets the Rollout `name` in `namespace` (deleted).
    pub fn forget(&self, namespace: &str, name: &str) {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .histories
            .remove(&format!("{namespace}/{name}"));
    }
}

fn bounded_namespace(seen: &mut HashSet<String>, namespace: &str) -> String {
    if seen.contains(namespace) {
        return namespace.to_owned();
    }
    if seen.len() < MAX_NAMESPACES {
        seen.insert(namespace.to_owned());
        return namespace.to_owned();
    }
    OTHER_NAMESPACE.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::RolloutPhase;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).expect("time")
    }

    fn registered() -> (Registry, DoraMetrics) {
        let mut registry = Registry::with_prefix("vigil");
        let metrics = DoraMetrics::register(&mut registry);
        (registry, metrics)
    }

    fn encode(registry: &Registry) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, registry).expect("encodes");
        out
    }

    fn progressing(canary: &str) -> RolloutStatus {
        RolloutStatus {
            phase: Some(RolloutPhase::Progressing),
            stable_revision: Some("a".to_owned()),
            canary_revision: Some(canary.to_owned()),
            canary_attempt: 1,
            canary_weight: 20,
            ..RolloutStatus::default()
        }
    }

    #[test]
    fn releases_are_counted_per_namespace_with_durations_and_time_to_restore() {
        let (registry, metrics) = registered();
        let idle = RolloutStatus {
            stable_revision: Some("a".to_owned()),
            ..RolloutStatus::default()
        };
        // shop/web: promoted after 120 s.
        metrics.record("shop", "web", &idle, &progressing("b"), at(0));
        let mut healthy = progressing("b");
        healthy.stable_revision = Some("b".to_owned());
        healthy.phase = Some(RolloutPhase::Healthy);
        metrics.record("shop", "web", &progressing("b"), &healthy, at(120));
        // pay/api: rolled back at 40 s, all traffic on stable 2 s after the verdict.
        metrics.record("pay", "api", &idle, &progressing("c"), at(0));
        let mut degraded = progressing("c");
        degraded.phase = Some(RolloutPhase::Degraded);
        degraded.abort = true;
        degraded.aborted_at = Some(Time(at(40)));
        degraded.canary_weight = 0;
        metrics.record("pay", "api", &progressing("c"), &degraded, at(42));
        let text = encode(&registry);
        for expected in [
            "vigil_releases_started_total{namespace=\"shop\"} 1",
            "vigil_releases_started_total{namespace=\"pay\"} 1",
            "vigil_releases_promoted_total{namespace=\"shop\"} 1",
            "vigil_releases_rolled_back_total{namespace=\"pay\"} 1",
            "vigil_release_duration_seconds_sum{namespace=\"shop\",outcome=\"promoted\"} 120.0",
            "vigil_release_duration_seconds_sum{namespace=\"pay\",outcome=\"rolled_back\"} 42.0",
            "vigil_time_to_restore_seconds_sum{namespace=\"pay\"} 2.0",
            "vigil_time_to_restore_seconds_count{namespace=\"pay\"} 1",
        ] {
            assert!(text.contains(expected), "missing {expected} in\n{text}");
        }
        for name in EXPORTED {
            assert!(text.contains(name), "{name} not exported:\n{text}");
        }
    }

    #[test]
    fn the_controller_remembers_one_release_per_rollout_however_many_it_saw() {
        let (registry, metrics) = registered();
        let mut before = RolloutStatus {
            stable_revision: Some("r0".to_owned()),
            ..RolloutStatus::default()
        };
        for release in 1..=5 {
            let started = progressing(&format!("r{release}"));
            let start = at(release * 1000);
            metrics.record("shop", "web", &before, &started, start);
            let mut promoted = started.clone();
            promoted.stable_revision = started.canary_revision.clone();
            promoted.phase = Some(RolloutPhase::Healthy);
            metrics.record("shop", "web", &started, &promoted, at(release * 1000 + 60));
            before = promoted;
        }
        let releases = |metrics: &DoraMetrics| {
            metrics.state.lock().expect("state").histories["shop/web"]
                .releases
                .len()
        };
        assert_eq!(releases(&metrics), 1);
        // The one kept is enough for what comes next: a rollback's duration and time to
        // restore.
        let started = progressing("r6");
        metrics.record("shop", "web", &before, &started, at(9000));
        let mut degraded = started.clone();
        degraded.phase = Some(RolloutPhase::Degraded);
        degraded.abort = true;
        degraded.aborted_at = Some(Time(at(9030)));
        degraded.canary_weight = 0;
        metrics.record("shop", "web", &started, &degraded, at(9033));
        assert_eq!(releases(&metrics), 1);
        let text = encode(&registry);
        for expected in [
            "vigil_releases_promoted_total{namespace=\"shop\"} 5",
            "vigil_release_duration_seconds_sum{namespace=\"shop\",outcome=\"promoted\"} 300.0",
            "vigil_release_duration_seconds_sum{namespace=\"shop\",outcome=\"rolled_back\"} 33.0",
            "vigil_time_to_restore_seconds_sum{namespace=\"shop\"} 3.0",
        ] {
            assert!(text.contains(expected), "missing {expected} in\n{text}");
        }
    }

    #[test]
    fn namespaces_past_the_cap_count_as_other() {
        let (registry, metrics) = registered();
        let idle = RolloutStatus::default();
        for n in 0..=MAX_NAMESPACES {
            metrics.record(&format!("ns{n}"), "web", &idle, &progressing("b"), at(0));
        }
        let text = encode(&registry);
        assert!(
            text.contains("vigil_releases_started_total{namespace=\"other\"} 1"),
            "{text}"
        );
        assert_eq!(text.matches("vigil_releases_started_total{").count(), 65);
    }
}

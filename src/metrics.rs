//! vigil's own metrics, exposed on `/metrics` in the OpenMetrics text format. Labels are
//! bounded (categories, phases, verdicts): no per-rollout series that grow without limit
//! (Rollouts are counted by phase).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of a failed reconcile.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    /// The error category (an error variant's name).
    pub category: String,
}

/// Labels of a rollout phase transition.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransitionLabels {
    /// The phase left.
    pub from: String,
    /// The phase entered.
    pub to: String,
}

/// Labels of an analysis verdict.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerdictLabels {
    /// Successful, Failed, Inconclusive or Error.
    pub verdict: String,
}

/// Labels of the count of Rollouts in a phase.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    /// Progressing, Paused, Healthy, Degraded or Aborted.
    pub phase: String,
}

/// Labels of `vigil_watch_errors_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResourceLabels {
    /// The watched kind, e.g. `ReplicaSet`.
    pub resource: String,
}

/// Upper bounds of the reconcile histograms, in seconds: steps of about 1.5 from 1 ms to
/// 128 ms (a factor of 2 cannot tell 16 ms from 32 ms), then doubling up to 8 s.
const RECONCILE_BUCKETS: &[f64] = &[
    0.001, 0.0015, 0.002, 0.003, 0.004, 0.006, 0.008, 0.012, 0.016, 0.024, 0.032, 0.048, 0.064,
    0.096, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096, 8.192,
];

/// The controller's metrics, shared by reconcilers and the HTTP server.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    /// Reconciles started.
    pub reconciles: Counter,
    /// Reconciles that failed, by category.
    pub reconcile_failures: Family<FailureLabels, Counter>,
    /// Rollout reconcile duration in seconds (`vigil_reconcile_duration_seconds`).
    pub reconcile_duration: Histogram,
    /// AnalysisRun reconcile duration in seconds, measurements included
    /// (`vigil_analysis_reconcile_duration_seconds`).
    pub analysis_reconcile_duration: Histogram,
    /// Rollout phase transitions.
    pub phase_transitions: Family<TransitionLabels, Counter>,
    /// Measurement verdicts.
    pub analysis_verdicts: Family<VerdictLabels, Counter>,
    /// Time to take one measurement (query and judge), in seconds.
    pub measurement_duration: Histogram,
    /// Rollouts by current phase (bounded: one series per phase), for alerts such as
    /// `vigil_rollouts{phase="Degraded"} > 0`.
    pub rollouts: Family<PhaseLabels, Gauge>,
    /// Notifications sent, failed and dropped, by sink.
    pub notifications: crate::notify::NotificationMetrics,
    /// Prometheus queries per origin: rate, requests in flight, errors, coalesced calls
    /// (bounded: at most 64 origins, the rest as `other`). Give it to the process'
    /// [`crate::analysis::provider::prometheus::ConcurrencyLimiter`].
    pub prometheus_queries: crate::analysis::provider::query_metrics::QueryMetrics,
    /// Errors of the watches behind the caches, by kind (RBAC refusals, missing CRDs,
    /// expired watches).
    pub watch_errors: Family<ResourceLabels, Counter>,
    /// Events dropped because the event queue was full (`vigil_events_dropped_total`).
    pub events_dropped: Counter,
    /// DORA figures: releases started, promoted, rolled back, durations, time to restore.
    pub dora: crate::dora_metrics::DoraMetrics,
    /// The phase each Rollout was last counted in, by `namespace/name`.
    counted: Arc<Mutex<HashMap<String, String>>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("vigil");
        let reconciles = Counter::default();
        let reconcile_failures = Family::<FailureLabels, Counter>::default();
        let reconcile_duration = Histogram::new(RECONCILE_BUCKETS.iter().copied());
        let analysis_reconcile_duration = Histogram::new(RECONCILE_BUCKETS.iter().copied());
        let phase_transitions = Family::<TransitionLabels, Counter>::default();
        let analysis_verdicts = Family::<VerdictLabels, Counter>::default();
        let measurement_duration = Histogram::new(exponential_buckets(0.005, 2.0, 12));
        let rollouts = Family::<PhaseLabels, Gauge>::default();
        let watch_errors = Family::<ResourceLabels, Counter>::default();
        let events_dropped = Counter::default();
        registry.register("reconciles", "Reconciles started", reconciles.clone());
        registry.register(
            "reconcile_failures",
            "Reconciles that failed, by error category",
            reconcile_failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time spent in one Rollout reconcile",
            reconcile_duration.clone(),
        );
        registry.register(
            "analysis_reconcile_duration_seconds",
            "Time spent in one AnalysisRun reconcile, its measurements included",
            analysis_reconcile_duration.clone(),
        );
        registry.register(
            "rollout_phase_transitions",
            "Rollout phase transitions",
            phase_transitions.clone(),
        );
        registry.register(
            "analysis_verdicts",
            "Verdicts of analysis measurements",
            analysis_verdicts.clone(),
        );
        registry.register(
            "measurement_duration_seconds",
            "Time to query and judge one measurement",
            measurement_duration.clone(),
        );
        registry.register("rollouts", "Rollouts by current phase", rollouts.clone());
        let notifications = crate::notify::NotificationMetrics::register(&mut registry);
        let prometheus_queries = crate::analysis::provider::query_metrics::QueryMetrics::default();
        prometheus_queries.register(&mut registry);
        registry.register(
            "watch_errors",
            "Errors of the controller's watches, by resource",
            watch_errors.clone(),
        );
        registry.register(
            "events_dropped",
            "Events dropped because the queue of events to publish was full",
            events_dropped.clone(),
        );
        let dora = crate::dora_metrics::DoraMetrics::register(&mut registry);
        Metrics {
            dora,
            prometheus_queries,
            registry: Arc::new(registry),
            rollouts,
            watch_errors,
            events_dropped,
            counted: Arc::default(),
            notifications,
            reconciles,
            reconcile_failures,
            reconcile_duration,
            analysis_reconcile_duration,
            phase_transitions,
            analysis_verdicts,
            measurement_duration,
        }
    }
}

impl Metrics {
    /// The OpenMetrics text of every metric, ending with `# EOF`.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Counts an error of the watch of `resource`.
    pub fn watch_failed(&self, resource: &str) {
        self.watch_errors
            .get_or_create(&ResourceLabels {
                resource: resource.to_owned(),
            })
            .inc();
    }

    /// Counts a failed reconcile.
    pub fn reconcile_failed(&self, category: &str) {
        self.reconcile_failures
            .get_or_create(&FailureLabels {
                category: category.to_owned(),
            })
            .inc();
    }

    /// Counts a phase transition.
    pub fn phase_changed(&self, from: &str, to: &str) {
        self.phase_transitions
            .get_or_create(&TransitionLabels {
                from: from.to_owned(),
                to: to.to_owned(),
            })
            .inc();
    }

    /// Counts the Rollout `key` (`namespace/name`) in `phase`, or no longer (`None`: deleted,
    /// or not yet given a phase).
    pub fn rollout_phase(&self, key: &str, phase: Option<&str>) {
        let mut counted = self.counted.lock().unwrap_or_else(PoisonError::into_inner);
        if counted.get(key).map(String::as_str) == phase {
            return;
        }
        let gauge = |phase: &str| {
            self.rollouts.get_or_create(&PhaseLabels {
                phase: phase.to_owned(),
            })
        };
        if let Some(before) = counted.remove(key) {
            gauge(&before).dec();
        }
        if let Some(phase) = phase {
            gauge(phase).inc();
            counted.insert(key.to_owned(), phase.to_owned());
        }
    }

    /// Counts a verdict.
    pub fn verdict(&self, verdict: &str) {
        self.analysis_verdicts
            .get_or_create(&VerdictLabels {
                verdict: verdict.to_owned(),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_counters_with_their_labels() {
        let metrics = Metrics::default();
        metrics.reconciles.inc();
        metrics.reconcile_failed("ApplyStatus");
        metrics.phase_changed("Progressing", "Degraded");
        metrics.verdict("Failed");
        metrics.reconcile_duration.observe(0.02);
        metrics.analysis_reconcile_duration.observe(0.2);
        let text = metrics.encode();
        assert!(text.contains("vigil_reconciles_total 1"), "{text}");
        assert!(
            text.contains("vigil_reconcile_failures_total{category=\"ApplyStatus\"} 1"),
            "{text}"
        );
        assert!(
            text.contains(
                "vigil_rollout_phase_transitions_total{from=\"Progressing\",to=\"Degraded\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("vigil_analysis_verdicts_total{verdict=\"Failed\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("vigil_reconcile_duration_seconds_count 1"),
            "{text}"
        );
        assert!(
            text.contains("vigil_reconcile_duration_seconds_bucket{le=\"0.024\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("vigil_reconcile_duration_seconds_bucket{le=\"0.016\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("vigil_analysis_reconcile_duration_seconds_count 1"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn rollouts_are_counted_in_their_current_phase_only() {
        let metrics = Metrics::default();
        metrics.rollout_phase("shop/web", Some("Progressing"));
        metrics.rollout_phase("shop/cart", Some("Progressing"));
        metrics.rollout_phase("shop/web", Some("Degraded"));
        metrics.rollout_phase("shop/web", Some("Degraded"));
        let text = metrics.encode();
        assert!(
            text.contains("vigil_rollouts{phase=\"Progressing\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("vigil_rollouts{phase=\"Degraded\"} 1"),
            "{text}"
        );
        metrics.rollout_phase("shop/web", None);
        metrics.rollout_phase("shop/gone", None);
        let text = metrics.encode();
        assert!(
            text.contains("vigil_rollouts{phase=\"Degraded\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("vigil_rollouts{phase=\"Progressing\"} 1"),
            "{text}"
        );
    }
}

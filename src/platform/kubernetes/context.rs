//! What every reconcile shares: the client, metrics, the event recorder, the Prometheus
//! concurrency limiter and the per-object backoff.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use jiff::Timestamp;
use kube::Client;

use crate::analysis::provider::prometheus::ConcurrencyLimiter;
use crate::metrics::Metrics;

/// The field manager of every write the controller makes.
pub const FIELD_MANAGER: &str = "vigil.dev/controller";
/// The finalizer that returns traffic to the stable version when a Rollout is deleted.
pub const FINALIZER: &str = "vigil.dev/traffic";
/// Label naming the Rollout a ReplicaSet or AnalysisRun belongs to; its value is
/// [`rollout_label_value`].
pub const ROLLOUT_LABEL: &str = "vigil.dev/rollout";

/// The [`ROLLOUT_LABEL`] value of a Rollout: its name, shortened with a hash when it is longer
/// than a label value may be (names may have 253 characters, label values 63).
pub fn rollout_label_value(rollout: &str) -> String {
    crate::rollout::fit_name(rollout, crate::rollout::MAX_LABEL_VALUE_LEN)
}
/// Label naming the revision (template hash) of a ReplicaSet, its pods and the Services'
/// selectors.
pub const REVISION_LABEL: &str = "vigil.dev/revision";
/// The annotation on a Service naming the Rollout that points it (Argo Rollouts'
/// `argo-rollouts.argoproj.io/managed-by-rollouts`): another Rollout naming the Service holds
/// with a spec problem instead of moving its selector.
pub const MANAGED_BY_ANNOTATION: &str = "vigil.dev/managed-by-rollout";
/// Label of the pods of a fair baseline (`canary.baseline`): `vigil.dev/role: baseline`.
pub const ROLE_LABEL: &str = "vigil.dev/role";
/// Label saying whether an AnalysisRun is a step's (`step`) or the background one.
pub const ANALYSIS_LABEL: &str = "vigil.dev/analysis";

/// Where reconciles read the time from. Tests fix it; production reads the system clock.
#[derive(Debug, Clone, Copy)]
pub enum Clock {
    /// The system clock.
    System,
    /// Always this instant.
    Fixed(Timestamp),
}

impl Clock {
    /// The current instant.
    pub fn now(self) -> Timestamp {
        match self {
            Clock::System => Timestamp::now(),
            Clock::Fixed(at) => at,
        }
    }
}

/// Per-object exponential backoff after transient failures: 5 s, 10 s, 20 s … up to 5 min,
/// with ±10 % jitter so failing objects do not retry in lockstep; reset by a success.
///
/// kube's `Controller` has no per-key backoff, and `error_policy` is synchronous, hence a
/// small map of failure counts.
#[derive(Debug, Default)]
pub struct Backoff {
    failures: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    /// First delay.
    pub const BASE: Duration = Duration::from_secs(5);
    /// Longest delay.
    pub const MAX: Duration = Duration::from_secs(300);

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        // A poisoned map is still a valid map of counts.
        self.failures
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records a failure of `key` and returns how long to wait before retrying it.
    pub fn failed(&self, key: &str) -> Duration {
        let count = {
            let mut map = self.map();
            let count = map.entry(key.to_owned()).or_insert(0);
            *count = count.saturating_add(1);
            *count
        };
        let delay = Self::delay(count);
        let jitter = rand::random_range(0.9..1.1);
        delay.mul_f64(jitter).min(Self::MAX)
    }

    /// The delay after `failures` consecutive failures, without jitter.
    pub fn delay(failures: u32) -> Duration {
        let exponent = failures.saturating_sub(1).min(16);
        Self::BASE.saturating_mul(1 << exponent).min(Self::MAX)
    }

    /// Forgets the failures of `key`.
    pub fn succeeded(&self, key: &str) {
        self.map().remove(key);
    }

    /// How many consecutive failures `key` has.
    pub fn failures(&self, key: &str) -> u32 {
        self.map().get(key).copied().unwrap_or(0)
    }
}

/// The share of the analysis slots (`--concurrency`) one namespace may hold at once: half,
/// so runs in one namespace stuck on a Prometheus that never answers cannot starve every
/// other namespace's analyses.
pub const NAMESPACE_SLOT_SHARE_DIVISOR: usize = 2;

/// How soon a run whose namespace holds all its slots is looked at again. Short, because
/// a slot frees as soon as a measurement ends; the retry holds no slot meanwhile.
pub const NAMESPACE_SLOT_RETRY: Duration = Duration::from_secs(2);

/// The most AnalysisRun reconciles one namespace may have measuring at once, given the
/// controller's `concurrency`: half of it (rounded down), at least 1.
pub fn namespace_slot_cap(concurrency: usize) -> usize {
    (concurrency / NAMESPACE_SLOT_SHARE_DIVISOR).max(1)
}

/// Per-namespace count of AnalysisRun reconciles measuring now, capped at `cap` each.
#[derive(Debug)]
pub struct NamespaceSlots {
    cap: usize,
    in_use: std::sync::Arc<Mutex<HashMap<String, usize>>>,
}

/// One namespace's slot, given back when dropped.
#[derive(Debug)]
pub struct NamespaceSlot {
    namespace: String,
    in_use: std::sync::Arc<Mutex<HashMap<String, usize>>>,
}

impl NamespaceSlots {
    /// At most `cap` (at least 1) slots per namespace.
    pub fn new(cap: usize) -> NamespaceSlots {
        NamespaceSlots {
            cap: cap.max(1),
            in_use: std::sync::Arc::default(),
        }
    }

    /// A slot for `namespace`, or `None` when it already holds its share.
    pub fn try_acquire(&self, namespace: &str) -> Option<NamespaceSlot> {
        let mut in_use = lock(&self.in_use);
        let count = in_use.entry(namespace.to_owned()).or_insert(0);
        if *count >= self.cap {
            return None;
        }
        *count += 1;
        Some(NamespaceSlot {
            namespace: namespace.to_owned(),
            in_use: self.in_use.clone(),
        })
    }
}

impl Drop for NamespaceSlot {
    fn drop(&mut self) {
        let mut in_use = lock(&self.in_use);
        if let Some(count) = in_use.get_mut(&self.namespace) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                in_use.remove(&self.namespace);
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned map of counts is still a valid map of counts.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Shared state of the controllers.
pub struct Context {
    /// The Kubernetes client.
    pub client: Client,
    /// The controller's metrics.
    pub metrics: Metrics,
    /// Publishes `events.k8s.io` events in the background (folding repeats into series, in
    /// bounded memory): a reconcile never waits for them.
    pub events: super::event_queue::EventQueue,
    /// Caps concurrent queries per Prometheus server.
    pub limiter: ConcurrencyLimiter,
    /// Per-object retry delays.
    pub backoff: Backoff,
    /// The time source.
    pub clock: Clock,
    /// The AnalysisTemplates and ClusterAnalysisTemplates in the cluster, when watched: a
    /// Rollout referring to one that does not exist is held before any traffic moves.
    pub templates: Option<TemplateIndex>,
    /// The canonical `--credential-dir`s: the only places a template's `file:` credential
    /// may be read from (none: every `file:` is refused).
    pub credential_dirs: Vec<std::path::PathBuf>,
    /// The `--credential-origin`s: the only origins a `file:` credential may be sent to.
    pub credential_origins: Vec<crate::analysis::provider::resolve::Origin>,
    /// The default Prometheus (`--prometheus`), for metrics that name no address.
    pub prometheus: crate::analysis::provider::resolve::CommandLinePrometheus,
    /// Per-namespace share of the AnalysisRun controller's slots.
    pub analysis_slots: NamespaceSlots,
    /// Per-Prometheus-origin share of the AnalysisRun controller's slots.
    pub address_slots: super::fair_share::AddressSlots,
    /// Calls the Rollouts' webhooks in the background, keeping the latest answers.
    pub webhooks: crate::platform::webhooks::WebhookCaller,
    /// What a Rollout reconcile reads: the watched ReplicaSets, AnalysisRuns, Services,
    /// Deployments and router objects.
    pub caches: super::cache::Caches,
    /// Where transitions are notified (the `vigil-notifications` ConfigMap, when there is
    /// one; none until it is read).
    pub notifier: crate::notify::SharedNotifier,
}

/// Caches of the templates, kept by reflectors.
#[derive(Clone)]
pub struct TemplateIndex {
    /// AnalysisTemplates.
    pub namespaced: kube::runtime::reflector::Store<crate::api::AnalysisTemplate>,
    /// ClusterAnalysisTemplates.
    pub cluster: kube::runtime::reflector::Store<crate::api::ClusterAnalysisTemplate>,
}

impl TemplateIndex {
    /// Whether the template `name` exists: a ClusterAnalysisTemplate with `cluster_scope`,
    /// otherwise an AnalysisTemplate in `namespace`.
    pub fn contains(&self, namespace: &str, name: &str, cluster_scope: bool) -> bool {
        use kube::runtime::reflector::ObjectRef;
        if cluster_scope {
            self.cluster.get(&ObjectRef::new(name)).is_some()
        } else {
            self.namespaced
                .get(&ObjectRef::new(name).within(namespace))
                .is_some()
        }
    }
}

impl Context {
    /// A context for `client`; events are reported as `vigil-controller` from `instance`
    /// (the pod name).
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime (the event publishers are spawned on the current one).
    pub fn new(
        client: Client,
        metrics: Metrics,
        limiter: ConcurrencyLimiter,
        instance: Option<String>,
    ) -> Context {
        let recorder =
            super::events::EventRecorder::new(client.clone(), "vigil-controller", instance);
        let events =
            super::event_queue::EventQueue::start(recorder, metrics.events_dropped.clone());
        // Without an outbox until the controller starts its notifications (`run`).
        let webhooks = crate::platform::webhooks::WebhookCaller::new(
            crate::platform::webhooks::WebhookCallerConfig {
                egress: limiter.egress().clone(),
                ..Default::default()
            },
        );
        Context {
            client,
            metrics,
            events,
            limiter,
            backoff: Backoff::default(),
            clock: Clock::System,
            templates: None,
            credential_dirs: Vec::new(),
            credential_origins: Vec::new(),
            prometheus: crate::analysis::provider::resolve::CommandLinePrometheus::None,
            analysis_slots: NamespaceSlots::new(namespace_slot_cap(10)),
            address_slots: super::fair_share::AddressSlots::new(
                super::fair_share::address_slot_cap(10),
            ),
            webhooks,
            caches: super::cache::Caches::default(),
            notifier: crate::notify::SharedNotifier::default(),
        }
    }
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_namespace_holds_at_most_its_share_of_slots() {
        assert_eq!(namespace_slot_cap(10), 5);
        assert_eq!(namespace_slot_cap(1), 1);
        let slots = NamespaceSlots::new(2);
        let first = slots.try_acquire("greedy");
        let second = slots.try_acquire("greedy");
        assert!(first.is_some() && second.is_some());
        assert!(slots.try_acquire("greedy").is_none());
        assert!(slots.try_acquire("other").is_some());
        drop(first);
        assert!(slots.try_acquire("greedy").is_some());
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets_on_success() {
        assert_eq!(Backoff::delay(1), Duration::from_secs(5));
        assert_eq!(Backoff::delay(2), Duration::from_secs(10));
        assert_eq!(Backoff::delay(4), Duration::from_secs(40));
        assert_eq!(Backoff::delay(7), Duration::from_secs(300));
        assert_eq!(Backoff::delay(u32::MAX), Duration::from_secs(300));
        let backoff = Backoff::default();
        let first = backoff.failed("shop/web");
        assert!(first >= Duration::from_millis(4500) && first <= Duration::from_millis(5500));
        let second = backoff.failed("shop/web");
        assert!(second >= Duration::from_secs(9) && second <= Duration::from_secs(11));
        assert_eq!(backoff.failures("shop/web"), 2);
        assert_eq!(backoff.failures("shop/other"), 0);
        backoff.succeeded("shop/web");
        assert_eq!(backoff.failures("shop/web"), 0);
    }
}

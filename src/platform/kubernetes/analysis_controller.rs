//! The AnalysisRun controller: each reconcile takes the measurements that are due
//! ([`driver::advance`]), records them in status, and comes back when the next one is due.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Config, Controller};
use serde_json::json;
use tracing::{Instrument, debug, info, warn};

use super::context::{Context, FIELD_MANAGER, NAMESPACE_SLOT_RETRY};
use super::jobs::KubeJobs;
use super::resources::{
    PrefetchedSecrets, SecretValue, refused_secret, secret_origins, secret_refs, secret_value,
};
use crate::analysis::driver::{self, MeasureAt};
use crate::analysis::provider::bounded_owned;
use crate::analysis::run::{STORED_MEASUREMENTS_PER_METRIC, errored_status};
use crate::api::{AnalysisPhase, AnalysisRun, AnalysisRunStatus, MetricResult};

/// Shortest requeue, so a run whose next measurement is "now" never spins.
const MIN_REQUEUE: Duration = Duration::from_secs(1);

/// Why a reconcile of an AnalysisRun failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The object lacks a field every stored object has.
    #[error("analysis run has no {key}")]
    MissingObjectKey {
        /// The field.
        key: &'static str,
    },
    /// Measuring or recording failed.
    #[error("failed to advance AnalysisRun {run}: {reason}")]
    Advance {
        /// The run.
        run: String,
        /// The cause, with Secret-derived values redacted.
        reason: String,
    },
    /// The reconcile panicked (a bug): counted and retried with backoff like any failure,
    /// while every other run goes on.
    #[error("reconcile of AnalysisRun {run} panicked: {message}")]
    ReconcilePanicked {
        /// The run.
        run: String,
        /// The panic's message.
        message: String,
    },
    /// Deleting the Jobs of an ended run failed.
    #[error("failed to delete the Jobs of AnalysisRun {run}: {source}")]
    DeleteJobs {
        /// The run.
        run: String,
        /// The cause.
        source: kube::Error,
    },
    /// Writing the status failed.
    #[error("failed to patch the status of AnalysisRun {run}: {source}")]
    PatchStatus {
        /// The run.
        run: String,
        /// The cause.
        source: kube::Error,
    },
}

impl Error {
    /// A stable snake_case label for metrics and logs.
    pub fn category(&self) -> &'static str {
        match self {
            Error::MissingObjectKey { .. } => "missing_object_key",
            Error::Advance { .. } => "advance_analysis_run",
            Error::PatchStatus { .. } => "patch_analysis_run_status",
            Error::DeleteJobs { .. } => "delete_analysis_jobs",
            Error::ReconcilePanicked { .. } => "reconcile_panicked",
        }
    }
}

/// Reads the Secrets the run's providers need, with the origins each may go to; a Secret
/// that cannot be read is recorded as the reason, and the metric's provider setup reports it.
/// A Secret that does not exist reads as one that has not opted in (same text).
async fn prefetch(api: &Api<Secret>, run: &AnalysisRun, ctx: &Context) -> PrefetchedSecrets {
    let mut secrets =
        PrefetchedSecrets::new(ctx.credential_dirs.clone(), ctx.credential_origins.clone());
    for (name, key) in secret_refs(&run.spec) {
        let value = match api.get(&name).await {
            Ok(secret) => secret_value(&secret, &name, &key).map(|bytes| SecretValue {
                bytes,
                origins: secret_origins(&secret, &name),
            }),
            Err(kube::Error::Api(response)) if response.code == 404 => Err(refused_secret(&name)),
            Err(error) => Err(format!("get secret {name:?}: {error}")),
        };
        secrets.insert(&name, &key, value);
    }
    secrets
}

/// New verdicts between two statuses, by phase name, from the per-metric counters.
pub fn new_verdicts(
    before: &AnalysisRunStatus,
    after: &AnalysisRunStatus,
) -> Vec<(&'static str, u64)> {
    let totals = |status: &AnalysisRunStatus, pick: fn(&MetricResult) -> i32| -> i64 {
        status
            .metric_results
            .iter()
            .map(|r| i64::from(pick(r)))
            .sum()
    };
    type Pick = fn(&MetricResult) -> i32;
    let pickers: [(&'static str, Pick); 4] = [
        ("Successful", |r| r.successful),
        ("Failed", |r| r.failed),
        ("Inconclusive", |r| r.inconclusive),
        ("Error", |r| r.error),
    ];
    pickers
        .into_iter()
        .filter_map(|(name, pick)| {
            let delta = totals(after, pick) - totals(before, pick);
            u64::try_from(delta)
                .ok()
                .filter(|d| *d > 0)
                .map(|d| (name, d))
        })
        .collect()
}

/// One reconcile of an AnalysisRun.
pub async fn reconcile(run: Arc<AnalysisRun>, ctx: Arc<Context>) -> Result<Action, Error> {
    let name = run.name_any();
    let namespace = run.namespace().unwrap_or_default();
    let span = tracing::info_span!("analysis", run = %name, namespace = %namespace);
    async move {
        ctx.metrics.reconciles.inc();
        let started = Instant::now();
        let result = super::catch_reconcile_panic(advance(&run, &ctx))
            .await
            .unwrap_or_else(|message| {
                tracing::error!(%message, "analysis reconcile panicked");
                Err(Error::ReconcilePanicked {
                    run: name.clone(),
                    message,
                })
            });
        ctx.metrics
            .analysis_reconcile_duration
            .observe(started.elapsed().as_secs_f64());
        if result.is_ok() {
            ctx.backoff.succeeded(&format!("run/{namespace}/{name}"));
        }
        result
    }
    .instrument(span)
    .await
}

/// Test-only: a run carrying this annotation panics in its reconcile, so tests can show
/// that one object's panic does not stop the others. Not compiled into release builds.
#[cfg(test)]
pub const PANIC_FOR_TEST_ANNOTATION: &str = "vigil.dev/test-panic";

/// The Prometheus origins the run queries, for its per-origin share of slots. A run over its
/// size bounds, or with an address that does not parse, queries nothing: it ends in Error
/// without a request, so it needs no share.
fn run_origins(
    run: &AnalysisRun,
    ctx: &Context,
) -> Vec<crate::analysis::provider::resolve::Origin> {
    if driver::check_run_bounds(&run.spec).is_err() {
        return Vec::new();
    }
    driver::query_origins(&run.spec, &ctx.prometheus).unwrap_or_default()
}

async fn advance(run: &AnalysisRun, ctx: &Context) -> Result<Action, Error> {
    #[cfg(test)]
    if run.annotations().contains_key(PANIC_FOR_TEST_ANNOTATION) {
        panic!("forced by {PANIC_FOR_TEST_ANNOTATION}");
    }
    let status = run.status.clone().unwrap_or_default();
    if status.phase.is_some_and(AnalysisPhase::is_completed) {
        // A completed (or terminated) run is a record: nothing more to do but remove the
        // Jobs it ran (again after a restart: deleting is idempotent).
        delete_jobs_of_ended_run(run, ctx).await?;
        return Ok(Action::await_change());
    }
    let name = run.name_any();
    let namespace = run.namespace().ok_or(Error::MissingObjectKey {
        key: "metadata.namespace",
    })?;
    // Waiting here would hold a controller slot; coming back soon holds none.
    let Some(_slot) = ctx.analysis_slots.try_acquire(&namespace) else {
        debug!("namespace holds its share of analysis slots; retrying soon");
        return Ok(Action::requeue(NAMESPACE_SLOT_RETRY));
    };
    let Some(_address_share) = ctx.address_slots.try_acquire_all(&run_origins(run, ctx)) else {
        debug!("a Prometheus the run queries serves its share of analysis slots; retrying soon");
        return Ok(Action::requeue(NAMESPACE_SLOT_RETRY));
    };
    let now = ctx.clock.now();
    // A run over its size bounds reads no Secret: `prepare` refuses it with the reason.
    let secrets = if driver::check_run_bounds(&run.spec).is_ok() {
        prefetch(&Api::namespaced(ctx.client.clone(), &namespace), run, ctx).await
    } else {
        PrefetchedSecrets::default()
    };
    // Credential files are read here: on a blocking thread, never on the async workers.
    let (spec, limiter, prometheus) = (
        run.spec.clone(),
        ctx.limiter.clone(),
        ctx.prometheus.clone(),
    );
    let configured = tokio::task::spawn_blocking(move || {
        let prepared = driver::prepare(&spec, &prometheus, &secrets);
        let redactor = prepared
            .as_ref()
            .map(|p| p.redactor.clone())
            .unwrap_or_default();
        let configured = prepared.and_then(|prepared| {
            driver::clients_for(&prepared.spec, &prometheus, &secrets, &limiter)
                .map(|clients| (prepared, clients))
        });
        let redactor = match &configured {
            Ok((_, clients)) => driver::redactor_with_credentials(&redactor, clients),
            Err(_) => redactor,
        };
        (redactor, configured)
    })
    .await;
    let (redactor, configured) = configured.map_err(|error| Error::Advance {
        run: name.clone(),
        reason: format!("configure the run's providers: {error}"),
    })?;
    let (next, next_at) = match configured {
        Ok((prepared, clients)) => {
            let jobs = KubeJobs::new(ctx.client.clone(), run);
            let advanced = driver::advance(
                &prepared.spec,
                &status,
                &clients,
                &jobs,
                now,
                MeasureAt::Now(now),
                STORED_MEASUREMENTS_PER_METRIC,
            )
            .await
            .map_err(|source| Error::Advance {
                run: name.clone(),
                reason: bounded_owned(redactor.redact(&source.to_string())),
            })?;
            // The one place a run's strings leave memory: nothing Secret-derived passes.
            (redactor.redact_status(&advanced.status), advanced.next_at)
        }
        Err(error) => {
            // Bounded: the text carries what the run's writer wrote (an address, a path).
            let reason = bounded_owned(redactor.redact(&error.to_string()));
            warn!(error = %reason, "cannot configure the run's providers");
            (errored_status(&status, reason, now), None)
        }
    };
    for (verdict, count) in new_verdicts(&status, &next) {
        ctx.metrics
            .analysis_verdicts
            .get_or_create(&crate::metrics::VerdictLabels {
                verdict: verdict.to_owned(),
            })
            .inc_by(count);
    }
    if next != status {
        let patch = Patch::Apply(json!({
            "apiVersion": "vigil.dev/v1alpha1",
            "kind": "AnalysisRun",
            "status": next,
        }));
        Api::<AnalysisRun>::namespaced(ctx.client.clone(), &namespace)
            .patch_status(&name, &PatchParams::apply(FIELD_MANAGER).force(), &patch)
            .await
            .map_err(|source| Error::PatchStatus {
                run: name.clone(),
                source,
            })?;
        if next.phase != status.phase {
            info!(phase = ?next.phase, message = next.message.as_deref().unwrap_or(""), "analysis phase changed");
        }
    }
    if next.phase.is_some_and(AnalysisPhase::is_completed) {
        delete_jobs_of_ended_run(run, ctx).await?;
    }
    Ok(match next_at {
        Some(at) => Action::requeue(
            Duration::try_from(at.duration_since(now))
                .unwrap_or(Duration::ZERO)
                .max(MIN_REQUEUE),
        ),
        None => Action::await_change(),
    })
}

/// Deletes the Jobs of a run that ended (Successful, Failed, Inconclusive, Error or
/// Terminated), background propagation: a Job still running is stopped. A deleted run's Jobs
/// go with it through their owner reference.
async fn delete_jobs_of_ended_run(run: &AnalysisRun, ctx: &Context) -> Result<(), Error> {
    if !run.spec.metrics.iter().any(|m| m.provider.job.is_some()) {
        return Ok(());
    }
    let deleted = KubeJobs::new(ctx.client.clone(), run)
        .delete_all()
        .await
        .map_err(|source| Error::DeleteJobs {
            run: run.name_any(),
            source,
        })?;
    if deleted > 0 {
        info!(deleted, "deleted the Jobs of the ended run");
    }
    Ok(())
}

/// Transient failures retry with a per-object exponential backoff.
pub fn error_policy(run: Arc<AnalysisRun>, error: &Error, ctx: Arc<Context>) -> Action {
    let name = run.name_any();
    let namespace = run.namespace().unwrap_or_default();
    ctx.metrics.reconcile_failed(error.category());
    let delay = ctx.backoff.failed(&format!("run/{namespace}/{name}"));
    warn!(run = %name, %namespace, %error, category = error.category(), retry_in = ?delay, "analysis reconcile failed");
    Action::requeue(delay)
}

/// Runs the AnalysisRun controller until `shutdown` resolves; at most `concurrency` runs
/// measure at once (queries per Prometheus are further capped by the context's limiter).
///
/// The runs come from the watch the Rollout controller's cache shares (`shared`, whose
/// store is `ctx.caches.analysis_runs`); without it (tests driving this controller alone)
/// the controller opens its own.
pub async fn run(
    ctx: Arc<Context>,
    scope: &super::WatchScope,
    shared: Option<super::cache::RunTriggers>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let controller = match shared {
        Some(events) => {
            Controller::for_shared_stream(events, ctx.caches.analysis_runs.watched.store.clone())
        }
        // Runs carry their Rollout's labels, so a shard's selector finds its runs too.
        None => Controller::new(
            scope.api::<AnalysisRun>(&ctx.client),
            scope.watcher_config(),
        ),
    };
    controller
        .with_config(Config::default().concurrency(scope.concurrency))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(error) = result {
                debug!(%error, "analysis controller");
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_are_counted_from_counter_deltas() {
        let before = AnalysisRunStatus {
            metric_results: vec![MetricResult {
                name: "a".into(),
                successful: 2,
                ..MetricResult::default()
            }],
            ..AnalysisRunStatus::default()
        };
        let after = AnalysisRunStatus {
            metric_results: vec![
                MetricResult {
                    name: "a".into(),
                    successful: 3,
                    ..MetricResult::default()
                },
                MetricResult {
                    name: "b".into(),
                    failed: 1,
                    ..MetricResult::default()
                },
            ],
            ..AnalysisRunStatus::default()
        };
        assert_eq!(
            new_verdicts(&before, &after),
            vec![("Successful", 1), ("Failed", 1)]
        );
        assert!(new_verdicts(&after, &after).is_empty());
    }

    #[test]
    fn a_provider_that_cannot_be_configured_errors_the_run_with_the_reason() {
        let now = jiff::Timestamp::from_second(1_700_000_000).expect("ts");
        let status = errored_status(
            &AnalysisRunStatus::default(),
            "metrics[0] (m): bad".into(),
            now,
        );
        assert_eq!(status.phase, Some(AnalysisPhase::Error));
        assert_eq!(status.message.as_deref(), Some("metrics[0] (m): bad"));
        assert!(status.completed_at.is_some());
    }
}

//! The Kubernetes platform: `vigil controller`, the production I/O shell around the pure
//! core. Two kube-rs controllers (Rollouts and AnalysisRuns), an HTTP server for metrics and
//! probes, and leader election over a `coordination.k8s.io/v1` Lease.

pub mod analysis_controller;
pub mod cache;
pub mod cached_replica_set;
pub mod context;
pub mod event_queue;
pub mod events;
pub mod fair_share;
pub mod jobs;
pub mod lean_meta;
pub mod notifications;
pub mod observe;
pub mod relist;
pub mod resources;
pub mod revision_settings;
pub mod rollout_controller;
pub mod router_crds;
pub mod server;
pub mod service_claims;
pub mod watch_health;
pub mod watches;

#[cfg(test)]
mod cache_tests;
#[cfg(test)]
mod default_prometheus_tests;
#[cfg(test)]
mod fairness_tests;
#[cfg(test)]
mod job_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod trust_tests;

use std::net::SocketAddr;
use std::sync::Arc;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::{oneshot, watch};
use tracing::{error, info, warn};

use crate::analysis::provider::prometheus::ConcurrencyLimiter;
use crate::analysis::provider::resolve::{CommandLinePrometheus, Origin};
use crate::api::{AnalysisTemplate, ClusterAnalysisTemplate, Rollout};
use crate::metrics::Metrics;
use cache::CacheReporting;
pub use context::{Context, FIELD_MANAGER, FINALIZER, TemplateIndex};
use futures::StreamExt as _;
use kube::runtime::reflector::{self, Store};
use rollout_controller::rollouts_using;
use server::Readiness;
use watch_health::observed;

/// How long a stopping controller waits for its queued events to be published.
const EVENTS_FLUSH_ON_SHUTDOWN: std::time::Duration = std::time::Duration::from_secs(5);

/// The name of the leader-election Lease of an unsharded controller.
pub const LEASE_NAME: &str = "vigil-controller";

/// The Lease of the controller reconciling the Rollouts that match `selector`: shards elect
/// their leaders separately. The selector is folded into a valid object name.
pub fn lease_name_for(selector: Option<&str>) -> String {
    let Some(selector) = selector.filter(|s| !s.trim().is_empty()) else {
        return LEASE_NAME.to_owned();
    };
    let mut folded = String::new();
    for c in selector.trim().chars().flat_map(char::to_lowercase) {
        let c = if c.is_ascii_alphanumeric() || c == '.' {
            c
        } else {
            '-'
        };
        if !(c == '-' && folded.ends_with('-')) {
            folded.push(c);
        }
    }
    let folded = folded.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    crate::rollout::fit_name(
        &format!("{LEASE_NAME}-{folded}"),
        crate::rollout::MAX_NAME_LEN,
    )
}
/// How to install the CRDs, printed when one is missing.
pub const CRD_INSTALL_HINT: &str = "vigil crds | kubectl apply --server-side -f -";

/// How `vigil controller` runs.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// Watch only this namespace (all when `None`).
    pub namespace: Option<String>,
    /// Where `/metrics`, `/livez` and `/readyz` are served.
    pub metrics_addr: SocketAddr,
    /// Reconcile only while holding the Lease.
    pub leader_election: bool,
    /// Name of the Lease (see [`lease_name_for`]).
    pub lease_name: String,
    /// Namespace of the Lease.
    pub lease_namespace: String,
    /// Concurrent reconciles per controller, and in-flight queries per Prometheus server.
    pub concurrency: u16,
    /// Reconcile only the Rollouts (and their AnalysisRuns) matching this label selector.
    pub selector: Option<String>,
    /// Directories a template's `file:` credential may lie under (none: every `file:` is
    /// refused).
    pub credential_dirs: Vec<std::path::PathBuf>,
    /// The only origins a `file:` credential may be sent to (none: every `file:` is refused).
    pub credential_origins: Vec<crate::analysis::provider::resolve::Origin>,
    /// The Prometheus queried by metrics that name no `address` (none: such a run errors).
    pub default_prometheus: Option<url::Url>,
    /// How often the `vigil-notifications` ConfigMap (in `lease_namespace`, the controller's
    /// own) and the Secrets it names are read again.
    pub notifications_reload: std::time::Duration,
    /// Let analysis requests reach link-local and cloud metadata addresses
    /// (`--allow-link-local-egress`; refused by default).
    pub allow_link_local_egress: bool,
}

/// Which objects the controllers reconcile, and how many at once.
#[derive(Debug, Clone, Default)]
pub struct WatchScope {
    /// Only this namespace (all when `None`).
    pub namespace: Option<String>,
    /// Only Rollouts and AnalysisRuns matching this label selector (all when `None`).
    pub selector: Option<String>,
    /// Concurrent reconciles.
    pub concurrency: u16,
}

impl WatchScope {
    /// The watch configuration of the Rollouts or AnalysisRuns in scope.
    pub fn watcher_config(&self) -> kube::runtime::watcher::Config {
        let config = kube::runtime::watcher::Config::default();
        match &self.selector {
            Some(selector) => config.labels(selector),
            None => config,
        }
    }

    /// The API of `K` in the namespace in scope (all namespaces when none).
    pub fn api<K>(&self, client: &Client) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        match &self.namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
}

/// Why the controller stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// No usable kubeconfig or in-cluster configuration.
    #[error("failed to configure the Kubernetes client: {0}")]
    ConfigureClient(#[source] kube::Error),
    /// The metrics address could not be bound.
    #[error("failed to listen on {addr}: {source}")]
    BindMetrics {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// A CRD is not installed.
    #[error("CRD {crd} is not installed; install the CRDs first: {CRD_INSTALL_HINT}")]
    FindCrd {
        /// The CRD's name.
        crd: String,
    },
    /// Reading a CRD failed.
    #[error("failed to check CRD {crd}: {source}")]
    GetCrd {
        /// The CRD's name.
        crd: String,
        /// The cause.
        source: kube::Error,
    },
    /// The notifications outbox could not start (its HTTP client).
    #[error("failed to start notifications: {0}")]
    StartNotifications(#[source] crate::notify::OutboxError),
    /// The Lease could not be set up.
    #[error("failed to set up leader election: {0}")]
    ElectLeader(#[source] kube_lease_manager::LeaseManagerError),
    /// Another instance took the Lease: stop at once so two leaders never act.
    #[error("lost the leader lease")]
    LoseLease,
    /// A `--credential-dir` does not exist or cannot be resolved.
    #[error("--credential-dir {dir}: {source}")]
    ResolveCredentialDir {
        /// The directory as given.
        dir: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A controller task ended (its watch stream closed, or it panicked outside a
    /// reconcile) while the process should still reconcile: exit so the pod restarts,
    /// rather than stay up without reconciling.
    #[error("the {controller} controller stopped: {reason}")]
    StopController {
        /// Which controller (`Rollout` or `AnalysisRun`).
        controller: &'static str,
        /// Why it stopped.
        reason: String,
    },
    /// The API server refused `--selector`.
    #[error("the label selector {selector:?} was refused: {source}")]
    CheckSelector {
        /// The selector as given.
        selector: String,
        /// The API server's answer.
        source: kube::Error,
    },
}

/// The text of a panic's payload (a `&str` or a `String`; anything else is named so).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

/// Runs one reconcile, turning a panic into `Err(message)`: one object's bug must never take
/// down the controller task that reconciles every other object.
pub async fn catch_reconcile_panic<T>(
    reconcile: impl std::future::Future<Output = T>,
) -> Result<T, String> {
    use futures::FutureExt as _;
    std::panic::AssertUnwindSafe(reconcile)
        .catch_unwind()
        .await
        .map_err(|payload| panic_message(payload.as_ref()))
}

/// Spawns a controller task that reports on `ended` when it stops, for whatever reason
/// (its stream ended, or it panicked).
fn spawn_controller(
    name: &'static str,
    controller: impl std::future::Future<Output = ()> + Send + 'static,
    ended: tokio::sync::mpsc::UnboundedSender<(&'static str, String)>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let reason = match catch_reconcile_panic(controller).await {
            Ok(()) => "its stream ended".to_owned(),
            Err(message) => format!("it panicked: {message}"),
        };
        let _ = ended.send((name, reason));
    })
}

/// Waits for the first of: termination (Ok), loss of the Lease, or the end of a controller
/// task (an error). Readiness turns false as soon as any of them happens.
async fn supervise(
    terminate: impl std::future::Future<Output = ()>,
    lease_lost: impl std::future::Future<Output = ()>,
    ended: &mut tokio::sync::mpsc::UnboundedReceiver<(&'static str, String)>,
    ready: &Readiness,
) -> Result<(), RunError> {
    let outcome = tokio::select! {
        () = terminate => Ok(()),
        () = lease_lost => Err(RunError::LoseLease),
        stopped = ended.recv() => {
            let (controller, reason) = stopped
                .unwrap_or(("every", "their tasks are gone".to_owned()));
            error!(controller, %reason, "controller stopped; exiting");
            Err(RunError::StopController { controller, reason })
        }
    };
    ready.set(false);
    outcome
}

/// Checks that every vigil CRD is installed.
pub async fn check_crds(client: &Client) -> Result<(), RunError> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in crate::api::all_crds() {
        let name = crd.name_any();
        match api.get_opt(&name).await {
            Ok(Some(_)) => {}
            Ok(None) => return Err(RunError::FindCrd { crd: name }),
            Err(source) => return Err(RunError::GetCrd { crd: name, source }),
        }
    }
    Ok(())
}

/// How long startup waits for the template caches to hold the cluster's templates.
const TEMPLATES_READY: std::time::Duration = std::time::Duration::from_secs(60);

/// Starts reflectors caching the AnalysisTemplates (in `namespace`, or all) and the
/// ClusterAnalysisTemplates, and waits until both hold what the cluster has. A change of a
/// template wakes the Rollouts in `rollouts` that use it. `None` when they do not get there in
/// time (the templates are then read when a run is created, as before): an empty cache would
/// make every reference look missing.
async fn watch_templates(
    client: &Client,
    scope: &WatchScope,
    rollouts: &Store<Rollout>,
    reporting: &CacheReporting,
) -> Option<TemplateIndex> {
    use kube::runtime::{WatchStreamExt as _, watcher};
    let (namespaced, namespaced_writer) = reflector::store::<AnalysisTemplate>();
    let (cluster, cluster_writer) = reflector::store::<ClusterAnalysisTemplate>();
    // The namespace in scope, not the selector: Rollouts name templates, not the reverse.
    let api: Api<AnalysisTemplate> = scope.api(client);
    let namespaced_events = watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(namespaced_writer);
    let wake = reporting.wake.clone();
    let using = rollouts.clone();
    tokio::spawn(
        observed(
            namespaced_events,
            "AnalysisTemplate",
            reporting.health.clone(),
            reporting.metrics.clone(),
        )
        .for_each(move |event| {
            if let Ok(watcher::Event::Apply(t) | watcher::Event::Delete(t)) = &event {
                for rollout in rollouts_using(&using, t.namespace().as_deref(), &t.name_any()) {
                    let _ = wake.send(rollout);
                }
            }
            futures::future::ready(())
        }),
    );
    let cluster_events = watcher(
        Api::<ClusterAnalysisTemplate>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(cluster_writer);
    let wake = reporting.wake.clone();
    let using = rollouts.clone();
    tokio::spawn(
        observed(
            cluster_events,
            "ClusterAnalysisTemplate",
            reporting.health.clone(),
            reporting.metrics.clone(),
        )
        .for_each(move |event| {
            if let Ok(watcher::Event::Apply(t) | watcher::Event::Delete(t)) = &event {
                for rollout in rollouts_using(&using, None, &t.name_any()) {
                    let _ = wake.send(rollout);
                }
            }
            futures::future::ready(())
        }),
    );
    let ready = tokio::time::timeout(TEMPLATES_READY, async {
        namespaced.wait_until_ready().await.is_ok() && cluster.wait_until_ready().await.is_ok()
    })
    .await;
    if ready == Ok(true) {
        info!("template caches ready");
        Some(TemplateIndex {
            namespaced,
            cluster,
        })
    } else {
        warn!(
            "template caches not ready in time; templates are read from the API server at each observe"
        );
        None
    }
}

/// Resolves when SIGTERM or Ctrl-C arrives.
async fn termination() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(error) => {
                warn!(%error, "cannot watch SIGTERM; Ctrl-C only");
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn identity() -> String {
    std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "vigil".to_owned())
        + &format!("-{}", std::process::id())
}

/// The canonical form of every `--credential-dir` (symlinks and `..` resolved), so a file's
/// canonical path can be compared with them.
pub fn canonical_credential_dirs(
    dirs: &[std::path::PathBuf],
) -> Result<Vec<std::path::PathBuf>, RunError> {
    dirs.iter()
        .map(|dir| {
            std::fs::canonicalize(dir).map_err(|source| RunError::ResolveCredentialDir {
                dir: dir.display().to_string(),
                source,
            })
        })
        .collect()
}

/// The `--prometheus` rule, logged with its origin (never its userinfo). Being the operator's
/// choice does not make it a credential origin: `file:` credentials reach it only when
/// `--credential-origin` lists it, as for any address.
fn default_prometheus(config: &ControllerConfig) -> CommandLinePrometheus {
    let Some(url) = &config.default_prometheus else {
        info!("no --prometheus: metrics must name their provider.prometheus.address");
        return CommandLinePrometheus::None;
    };
    if let Ok(origin) = Origin::of(url) {
        let listed = config.credential_origins.contains(&origin);
        info!(%origin, credential_origin = listed, "default Prometheus for metrics without an address");
    }
    CommandLinePrometheus::Default(url.clone())
}

/// Starts the notifications outbox (the process' only one: the webhook caller's `event` and
/// `post-rollout` hooks go through it too) and the task that keeps `context.notifier` in step
/// with the `vigil-notifications` ConfigMap of the controller's namespace.
async fn start_notifications(
    context: &mut Context,
    config: &ControllerConfig,
) -> Result<tokio::task::JoinHandle<()>, RunError> {
    let egress = context.limiter.egress().clone();
    let (outbox, _worker) = crate::notify::Outbox::start(
        crate::notify::OutboxSettings {
            egress: egress.clone(),
            ..crate::notify::OutboxSettings::default()
        },
        context.metrics.notifications.clone(),
    )
    .map_err(RunError::StartNotifications)?;
    context.webhooks = crate::platform::webhooks::WebhookCaller::new(
        crate::platform::webhooks::WebhookCallerConfig {
            outbox: Some(outbox.clone()),
            egress,
            ..Default::default()
        },
    );
    Ok(notifications::start(
        context.client.clone(),
        config.lease_namespace.clone(),
        outbox,
        context.notifier.clone(),
        config.notifications_reload,
    )
    .await)
}

/// Runs the controllers and the server until SIGTERM/Ctrl-C (Ok) or a fatal error.
pub async fn run(config: ControllerConfig) -> Result<(), RunError> {
    let credential_dirs = canonical_credential_dirs(&config.credential_dirs)?;
    if credential_dirs.is_empty() {
        info!("no --credential-dir: templates' file: credentials are refused");
    } else if config.credential_origins.is_empty() {
        info!("no --credential-origin: templates' file: credentials are refused");
    }
    let client = Client::try_default()
        .await
        .map_err(RunError::ConfigureClient)?;
    let metrics = Metrics::default();
    let ready = Readiness::default();
    let (stop_server, server_shutdown) = watch::channel(false);
    let listener =
        server::bind(config.metrics_addr)
            .await
            .map_err(|source| RunError::BindMetrics {
                addr: config.metrics_addr,
                source,
            })?;
    info!(addr = %config.metrics_addr, "serving /metrics /livez /readyz");
    let server = tokio::spawn(server::serve_admin(
        listener,
        metrics.clone(),
        ready.clone(),
        server_shutdown,
    ));

    let config = ControllerConfig {
        credential_dirs,
        ..config
    };
    let result = run_controllers(client, metrics, ready, &config).await;
    let _ = stop_server.send(true);
    let _ = server.await;
    result
}

async fn run_controllers(
    client: Client,
    metrics: Metrics,
    ready: Readiness,
    config: &ControllerConfig,
) -> Result<(), RunError> {
    check_crds(&client).await?;
    info!("CRDs installed");
    if let Some(selector) = &config.selector {
        // The API server is the authority on selector syntax: ask it once, up front.
        Api::<Rollout>::all(client.clone())
            .list(&ListParams::default().labels(selector).limit(1))
            .await
            .map_err(|source| RunError::CheckSelector {
                selector: selector.clone(),
                source,
            })?;
    }

    let terminate = termination();
    tokio::pin!(terminate);
    let mut leadership = None;
    if config.leader_election {
        let manager = LeaseManagerBuilder::new(client.clone(), &config.lease_name)
            .with_namespace(&config.lease_namespace)
            .with_identity(identity())
            .with_duration(15)
            .with_grace(5)
            .build()
            .await
            .map_err(RunError::ElectLeader)?;
        let (mut is_leader, task) = manager.watch().await;
        info!(lease = %config.lease_name, namespace = %config.lease_namespace, "waiting for the leader lease");
        tokio::select! {
            won = is_leader.wait_for(|leader| *leader) => {
                if won.is_err() {
                    return Err(RunError::LoseLease);
                }
            }
            () = &mut terminate => return Ok(()),
        }
        info!("leading");
        leadership = Some((is_leader, task));
    }

    let scope = WatchScope {
        namespace: config.namespace.clone(),
        selector: config.selector.clone(),
        concurrency: config.concurrency,
    };
    // Every watch starts before either controller: their stores fill while the
    // controllers start, and a reconcile waits until they have listed.
    let (wake, woken) = tokio::sync::mpsc::unbounded_channel();
    let reporting = CacheReporting {
        health: ready.watches().clone(),
        metrics: metrics.clone(),
        wake,
    };
    let references = cache::Index::new(cache::references);
    let rollout_writer = reflector::store::Writer::default();
    let started = watches::start(&client, &scope, &references, &reporting).await;
    let templates = watch_templates(&client, &scope, &rollout_writer.as_reader(), &reporting).await;
    let rollout_inputs = rollout_controller::RolloutInputs {
        writer: rollout_writer,
        references,
        wake: woken,
        wake_sender: reporting.wake.clone(),
        health: reporting.health.clone(),
    };
    let limiter = ConcurrencyLimiter::new(usize::from(config.concurrency))
        .with_metrics(metrics.prometheus_queries.clone())
        .with_egress(crate::http_client::EgressGuard::new(
            config.allow_link_local_egress,
        ));
    let mut context = Context::new(client, metrics, limiter, std::env::var("POD_NAME").ok());
    context.templates = templates;
    context.caches = started.caches;
    // One AnalysisRun watch for both controllers. (Not kube's `ReflectHandle`: it returns
    // `Pending` without a waker when a run is deleted before it is read, stalling the
    // AnalysisRun controller for good; the triggers carry the stored run itself.)
    let shared_runs = Some(started.runs);
    context.credential_dirs = config.credential_dirs.clone();
    context.credential_origins = config.credential_origins.clone();
    context.prometheus = default_prometheus(config);
    context.analysis_slots =
        context::NamespaceSlots::new(context::namespace_slot_cap(usize::from(config.concurrency)));
    context.address_slots = fair_share::AddressSlots::new(fair_share::address_slot_cap(
        usize::from(config.concurrency),
    ));
    let notifications = start_notifications(&mut context, config).await?;
    let ctx = Arc::new(context);
    let (stop_rollouts, rollouts_stopped) = oneshot::channel::<()>();
    let (stop_runs, runs_stopped) = oneshot::channel::<()>();
    let (ended_tx, mut ended) = tokio::sync::mpsc::unbounded_channel();
    let rollouts = spawn_controller(
        "Rollout",
        {
            let ctx = ctx.clone();
            let scope = scope.clone();
            async move {
                rollout_controller::run(ctx, &scope, rollout_inputs, async {
                    let _ = rollouts_stopped.await;
                })
                .await;
            }
        },
        ended_tx.clone(),
    );
    let runs = spawn_controller(
        "AnalysisRun",
        {
            let ctx = ctx.clone();
            async move {
                analysis_controller::run(ctx, &scope, shared_runs, async {
                    let _ = runs_stopped.await;
                })
                .await;
            }
        },
        ended_tx,
    );
    ready.set(true);
    info!(
        namespace = config.namespace.as_deref().unwrap_or("*"),
        selector = config.selector.as_deref().unwrap_or(""),
        "controllers running"
    );

    let lease_lost = async {
        match leadership.as_mut() {
            Some((is_leader, _)) => {
                let _ = is_leader.wait_for(|leader| !*leader).await;
            }
            None => std::future::pending().await,
        }
    };
    let outcome = supervise(terminate, lease_lost, &mut ended, &ready).await;
    info!("shutting down");
    let _ = stop_rollouts.send(());
    let _ = stop_runs.send(());
    let _ = tokio::join!(rollouts, runs);
    // The last transitions' events (Aborted, Completed) are still queued: publish them
    // before giving up the lease, within a bound.
    if tokio::time::timeout(EVENTS_FLUSH_ON_SHUTDOWN, ctx.events.flush())
        .await
        .is_err()
    {
        warn!("shutting down with events still queued");
    }
    notifications.abort();
    if let Some((is_leader, task)) = leadership {
        // Closing the channel makes the manager release the Lease, so a standby takes over
        // without waiting for it to expire.
        drop(is_leader);
        match task.await {
            Ok(Ok(_)) => info!("released the leader lease"),
            Ok(Err(error)) => warn!(%error, "cannot release the leader lease"),
            Err(error) => error!(%error, "lease task failed"),
        }
    }
    outcome
}

//! `vigil run`: run Rollouts and AnalysisTemplates from files on this machine until Ctrl-C or
//! SIGTERM, with the local platform (processes, weighted proxy, state directory).

use std::net::SocketAddr;
use std::path::PathBuf;

use url::Url;

use crate::analysis::provider::resolve::{CommandLinePrometheus, ResolveError};
use crate::notify::config::{MAX_CONFIG_BYTES, Platform as ConfigPlatform};
use crate::notify::notifier::resolve_local_urls;
use crate::notify::{
    NotificationMetrics, NotificationsConfig, Notifier, Outbox, OutboxSettings, SharedNotifier,
};
use crate::platform::local::admin::{Admin, DEFAULT_ADMIN, require_loopback};
use crate::platform::local::engine::{Engine, EngineConfig, EngineHandle, Sources};
use crate::platform::local::loadgen::{LoadConfig, LoadError, LoadStats, run_load};
use crate::platform::local::supervisor::SupervisorConfig;

/// Exit code: the input files are invalid.
pub const EXIT_INVALID_INPUT: i32 = 2;
/// Exit code: the engine could not start (an address in use, the state directory).
pub const EXIT_START: i32 = 1;

/// Arguments of `vigil run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Rollout and AnalysisTemplate YAML files (several documents per file allowed).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Where status, AnalysisRuns and events persist; a restarted engine resumes from it.
    #[arg(long, default_value = ".vigil")]
    pub state_dir: PathBuf,
    /// Prometheus to query, replacing each metric's `address` (templates may then leave it
    /// unset).
    #[arg(
        long,
        value_name = "URL",
        value_parser = CommandLinePrometheus::parse_url
    )]
    pub prometheus: Option<Url>,
    /// Loopback address of the admin endpoint used by `vigil local ...` (other addresses are
    /// refused: the endpoint runs commands). Its token is written to `admin.token` in the
    /// state directory.
    #[arg(long, default_value = DEFAULT_ADMIN)]
    pub admin: SocketAddr,
    /// Notifications configuration (the YAML of the `vigil-notifications` ConfigMap, with
    /// each sink's URL from a `file` or an `env` variable): who hears about transitions.
    #[arg(long, value_name = "FILE")]
    pub notifications: Option<PathBuf>,
    /// Let analysis requests reach link-local and cloud metadata addresses (169.254.0.0/16,
    /// fe80::/10, fd00:ec2::254, 100.100.100.200). Off by default: a template writer's `web`
    /// metric could otherwise read the node's cloud credentials into the run's status.
    #[arg(long)]
    pub allow_link_local_egress: bool,
    /// Send RPS GET requests per second to each Rollout's proxy (`/`) until stopped, so its
    /// analysis has traffic to judge (the load `vigil demo` sends). At most 10000.
    #[arg(long, value_name = "RPS", value_parser = parse_load_rate)]
    pub load: Option<f64>,
}

/// The highest `--load` accepted, per second: a loopback load for a release on one machine.
pub const MAX_LOAD_PER_SEC: f64 = 10_000.0;

/// `--load RPS`: a rate in (0, [`MAX_LOAD_PER_SEC`]].
fn parse_load_rate(text: &str) -> Result<f64, String> {
    let rate: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of requests per second"))?;
    if rate > 0.0 && rate <= MAX_LOAD_PER_SEC {
        Ok(rate)
    } else {
        Err(format!(
            "{text} is not in (0, {MAX_LOAD_PER_SEC}] requests per second"
        ))
    }
}

/// How long `--load` may run: until stopped, in practice.
const LOAD_FOR: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);

/// Starts `--load` against every Rollout's proxy; each stops when `stop` flips.
fn start_load(
    rate: f64,
    engine: &EngineHandle,
    stop: &tokio::sync::watch::Receiver<bool>,
) -> Vec<(
    String,
    tokio::task::JoinHandle<Result<LoadStats, LoadError>>,
)> {
    let mut loads = Vec::new();
    for name in engine.names() {
        let Some(view) = engine.get(&name) else {
            continue;
        };
        let Ok(target) = Url::parse(&format!("http://{}/", view.listen)) else {
            continue;
        };
        let mut stop = stop.clone();
        eprintln!("vigil run: rollout {name}: sending {rate} requests/s to {target}");
        let task = tokio::spawn(run_load(
            LoadConfig::new(target, rate, LOAD_FOR),
            async move {
                let _ = stop.wait_for(|stopped| *stopped).await;
            },
        ));
        loads.push((name, task));
    }
    loads
}

/// Stops the loads and prints one line each: requests sent, answered by code, failed.
async fn stop_load(
    stop: &tokio::sync::watch::Sender<bool>,
    loads: Vec<(
        String,
        tokio::task::JoinHandle<Result<LoadStats, LoadError>>,
    )>,
) {
    let _ = stop.send(true);
    for (name, task) in loads {
        match task.await {
            Ok(Ok(stats)) => eprintln!(
                "vigil run: rollout {name}: load sent {} requests, {} answered 5xx, {} failed \
                 without an answer",
                stats.sent,
                stats.server_errors(),
                stats.transport_errors + stats.timeouts
            ),
            Ok(Err(error)) => eprintln!("vigil run: rollout {name}: {error}"),
            Err(error) => eprintln!("vigil run: rollout {name}: the load stopped: {error}"),
        }
    }
}

/// Runs `vigil run` and returns the exit code.
pub fn run(args: &RunArgs) -> i32 {
    if let Err(error) = require_loopback(args.admin) {
        eprintln!("vigil run: {error}");
        return EXIT_INVALID_INPUT;
    }
    let sources = match Sources::load(&args.files) {
        Ok(sources) => sources,
        Err(error) => {
            eprintln!("vigil run: {error}");
            return EXIT_INVALID_INPUT;
        }
    };
    if sources.rollouts.is_empty() {
        eprintln!("vigil run: no Rollout in the files given");
        return EXIT_INVALID_INPUT;
    }
    if let Err(error) = every_metric_has_an_address(&sources, args.prometheus.as_ref()) {
        eprintln!("vigil run: {error}");
        return EXIT_INVALID_INPUT;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("vigil run: failed to start the async runtime: {error}");
            return EXIT_START;
        }
    };
    runtime.block_on(serve(args, sources))
}

/// Refuses before anything starts a metric that would query no Prometheus: one without an
/// address when `--prometheus` is not given either.
fn every_metric_has_an_address(sources: &Sources, prometheus: Option<&Url>) -> Result<(), String> {
    let rule = prometheus.map_or(CommandLinePrometheus::None, |url| {
        CommandLinePrometheus::Override(url.clone())
    });
    for (template, spec) in &sources.templates {
        for (index, metric) in spec.metrics.iter().enumerate() {
            let Some(provider) = &metric.provider.prometheus else {
                continue;
            };
            if let Err(error @ ResolveError::MissingAddress) = rule.address_of(provider) {
                return Err(format!(
                    "template {template}: metrics[{index}] ({}): {error}",
                    metric.name
                ));
            }
        }
    }
    Ok(())
}

/// The notifier `--notifications FILE` configures (none without the flag), with its outbox
/// started on the current runtime.
/// The outbox is the process' only one: the engine's webhooks use it too.
fn start_notifier(
    path: Option<&std::path::Path>,
    outbox: &Outbox,
) -> Result<SharedNotifier, String> {
    let shared = SharedNotifier::default();
    let Some(path) = path else {
        return Ok(shared);
    };
    let text = read_config(path).map_err(|e| format!("--notifications {}: {e}", path.display()))?;
    let config = NotificationsConfig::parse(&text, ConfigPlatform::Local)
        .map_err(|e| format!("--notifications {}: {e}", path.display()))?;
    let urls = resolve_local_urls(&config)
        .map_err(|e| format!("--notifications {}: {e}", path.display()))?;
    shared.replace(Some(Notifier::new(config, urls, outbox.clone())));
    Ok(shared)
}

/// The file's text, refused beyond [`MAX_CONFIG_BYTES`] before it is read whole.
fn read_config(path: &std::path::Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(MAX_CONFIG_BYTES as u64 + 1)
        .read_to_string(&mut text)?;
    Ok(text)
}

/// One line per sink: what was sent, failed and dropped.
fn print_notification_counts(notifier: &SharedNotifier) {
    let Some(notifier) = notifier.current() else {
        return;
    };
    let metrics = notifier.metrics();
    for sink in &notifier.config().sinks {
        let count = |family| NotificationMetrics::value(family, &sink.name);
        eprintln!(
            "vigil run: notifications to {}: {} sent, {} failed, {} dropped",
            sink.name,
            count(&metrics.sent),
            count(&metrics.failed),
            count(&metrics.dropped)
        );
    }
}

async fn serve(args: &RunArgs, sources: Sources) -> i32 {
    let outbox_settings = OutboxSettings {
        egress: crate::http_client::EgressGuard::new(args.allow_link_local_egress),
        ..OutboxSettings::default()
    };
    let outbox = match Outbox::start(outbox_settings, NotificationMetrics::default()) {
        Ok((outbox, _worker)) => outbox,
        Err(error) => {
            eprintln!("vigil run: {error}");
            return EXIT_START;
        }
    };
    let notifier = match start_notifier(args.notifications.as_deref(), &outbox) {
        Ok(notifier) => notifier,
        Err(error) => {
            eprintln!("vigil run: {error}");
            return EXIT_INVALID_INPUT;
        }
    };
    let config = EngineConfig {
        state_dir: args.state_dir.clone(),
        prometheus: args.prometheus.clone(),
        supervisor: SupervisorConfig::default(),
        notifier: notifier.clone(),
        outbox: Some(outbox),
        allow_link_local_egress: args.allow_link_local_egress,
    };
    let (engine, task) = match Engine::start(config, sources).await {
        Ok(started) => started,
        Err(error) => {
            eprintln!("vigil run: {error}");
            return EXIT_START;
        }
    };
    let admin = match Admin::bind(args.admin, engine.clone(), &args.state_dir).await {
        Ok(admin) => admin,
        Err(error) => {
            eprintln!("vigil run: {error}");
            engine.shutdown().await;
            return EXIT_START;
        }
    };
    for name in engine.names() {
        if let Some(view) = engine.get(&name) {
            eprintln!(
                "vigil run: rollout {name}: proxy on http://{}, metrics on http://{}/metrics",
                view.listen, view.metrics_listen
            );
        }
    }
    eprintln!(
        "vigil run: admin on http://{} (token in {}); from this directory `vigil get rollout \
         NAME`, `vigil promote NAME`… find it, elsewhere add --state-dir {}; Ctrl-C stops",
        admin.local_addr(),
        admin.token_file().display(),
        args.state_dir.display(),
    );
    let (stop_loads, loads_stopped) = tokio::sync::watch::channel(false);
    let loads = args
        .load
        .map(|rate| start_load(rate, &engine, &loads_stopped))
        .unwrap_or_default();
    let watcher = tokio::spawn(watch_files(args.files.clone(), engine.clone()));
    wait_for_signal().await;
    watcher.abort();
    eprintln!("vigil run: stopping");
    stop_load(&stop_loads, loads).await;
    admin.shutdown().await;
    engine.shutdown().await;
    print_notification_counts(&notifier);
    let _ = task.await;
    0
}

/// How often the files given to `vigil run` are read again.
const FILE_POLL: std::time::Duration = std::time::Duration::from_secs(1);

/// Applies the files again whenever their content changes (an edited `--version` starts a
/// release, as `vigil local apply` would). A change that does not load is reported and
/// ignored: what runs keeps running.
async fn watch_files(files: Vec<PathBuf>, engine: EngineHandle) {
    let read_all = || {
        files
            .iter()
            .map(|path| std::fs::read(path).ok())
            .collect::<Vec<_>>()
    };
    let mut seen = read_all();
    loop {
        tokio::time::sleep(FILE_POLL).await;
        let now = read_all();
        if now == seen {
            continue;
        }
        seen = now;
        // Parsing may take a while on a big file: keep it off the async workers.
        let load = {
            let files = files.clone();
            tokio::task::spawn_blocking(move || Sources::load(&files)).await
        };
        let Ok(loaded) = load else {
            tracing::warn!("loading the changed files was interrupted");
            continue;
        };
        match loaded {
            Ok(sources) => match engine.apply(sources).await {
                Ok(names) => {
                    tracing::info!(rollouts = %names.join(", "), "files changed; applied");
                    eprintln!("vigil run: files changed; applied {}", names.join(", "));
                }
                Err(error) => {
                    tracing::warn!(%error, "files changed but could not be applied");
                    eprintln!("vigil run: files changed but were not applied: {error}");
                }
            },
            Err(error) => {
                tracing::warn!(%error, "changed files ignored");
                eprintln!("vigil run: changed files ignored (what runs keeps running): {error}");
            }
        }
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn load_takes_a_bounded_positive_rate() {
        assert_eq!(parse_load_rate("20"), Ok(20.0));
        assert_eq!(parse_load_rate("0.5"), Ok(0.5));
        for bad in ["0", "-1", "NaN", "inf", "10001", "lots"] {
            assert!(parse_load_rate(bad).is_err(), "{bad}");
        }
        let cli = crate::cli::Cli::try_parse_from(["vigil", "run", "r.yaml", "--load", "25"])
            .expect("parses");
        assert!(matches!(cli.command, crate::cli::Command::Run(ref a) if a.load == Some(25.0)));
    }
}

//! `vigil controller`: the Kubernetes controller (Rollouts and AnalysisRuns), its metrics and
//! probes, with leader election.

use std::net::SocketAddr;

use clap::Args;

use crate::analysis::provider::resolve::CommandLinePrometheus;
use crate::platform::kubernetes::{ControllerConfig, lease_name_for, run as run_controller};

/// Arguments of `vigil controller`.
#[derive(Debug, Args)]
pub struct ControllerArgs {
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
    /// Address of `/metrics`, `/livez` and `/readyz`.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// Reconcile without holding the `vigil-controller` Lease (one replica only).
    #[arg(long)]
    pub no_leader_election: bool,
    /// Namespace of the leader-election Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "vigil-system")]
    pub lease_namespace: String,
    /// How often the `vigil-notifications` ConfigMap (in the controller's namespace,
    /// `POD_NAMESPACE`) and the Secrets it names are read again, in seconds.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u16).range(1..=3600))]
    pub notifications_reload_seconds: u16,
    /// Concurrent reconciles per controller, and in-flight queries per Prometheus server.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,
    /// Reconcile only the Rollouts matching this label selector (e.g. `vigil.dev/shard=a`) and
    /// their AnalysisRuns: controllers with disjoint selectors share a cluster, each with its
    /// own Lease.
    #[arg(long, short = 'l')]
    pub selector: Option<String>,
    /// Name of the leader-election Lease (default: `vigil-controller`, or
    /// `vigil-controller-<selector>` with `--selector`).
    #[arg(long)]
    pub lease_name: Option<String>,
    /// A directory whose files templates may name as `file:` credentials (repeatable; the
    /// environment variable takes a `:`-separated list). Without one, every `file:` credential
    /// is refused, so no template can make the controller read its own service-account token.
    #[arg(
        long = "credential-dir",
        env = "VIGIL_CREDENTIAL_DIRS",
        value_delimiter = ':'
    )]
    pub credential_dirs: Vec<std::path::PathBuf>,
    /// An origin (`scheme://host:port`) the `--credential-dir` files may be sent to
    /// (repeatable; the environment variable takes a `,`-separated list). A template whose
    /// address has another origin gets no file credential; without one, every `file:`
    /// credential is refused. Plain `http://` only when listed as such.
    #[arg(
        long = "credential-origin",
        env = "VIGIL_CREDENTIAL_ORIGINS",
        value_delimiter = ',',
        value_parser = crate::analysis::provider::resolve::Origin::parse_listed,
    )]
    pub credential_origins: Vec<crate::analysis::provider::resolve::Origin>,
    /// The Prometheus queried by metrics that name no `provider.prometheus.address`, as
    /// Flagger's `-metrics-server` (e.g. `http://prometheus.monitoring:9090`). A metric's own
    /// address still wins. It is not a credential origin by being the default: list it with
    /// `--credential-origin` for `file:` credentials to reach it.
    #[arg(
        long,
        env = "VIGIL_PROMETHEUS",
        value_name = "URL",
        value_parser = CommandLinePrometheus::parse_url,
    )]
    pub prometheus: Option<url::Url>,
    /// Let analysis requests reach link-local and cloud metadata addresses (169.254.0.0/16,
    /// fe80::/10, fd00:ec2::254, 100.100.100.200). Off by default: a template writer's `web`
    /// metric could otherwise read the node's cloud credentials into the run's status.
    #[arg(long, env = "VIGIL_ALLOW_LINK_LOCAL_EGRESS")]
    pub allow_link_local_egress: bool,
}

/// Runs the controller until SIGTERM/Ctrl-C; exit code 0, or 1 with the reason on stderr.
pub fn run(args: &ControllerArgs) -> i32 {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("vigil controller: start the async runtime: {error}");
            return 1;
        }
    };
    let config = ControllerConfig {
        namespace: args.namespace.clone(),
        metrics_addr: args.metrics_addr,
        leader_election: !args.no_leader_election,
        lease_name: args
            .lease_name
            .clone()
            .unwrap_or_else(|| lease_name_for(args.selector.as_deref())),
        lease_namespace: args.lease_namespace.clone(),
        concurrency: args.concurrency,
        selector: args.selector.clone(),
        credential_dirs: args.credential_dirs.clone(),
        credential_origins: args.credential_origins.clone(),
        default_prometheus: args.prometheus.clone(),
        notifications_reload: std::time::Duration::from_secs(u64::from(
            args.notifications_reload_seconds,
        )),
        allow_link_local_egress: args.allow_link_local_egress,
    };
    match runtime.block_on(run_controller(config)) {
        Ok(()) => 0,
        Err(error) => {
            tracing::error!(%error, "controller stopped");
            eprintln!("vigil controller: {error}");
            1
        }
    }
}

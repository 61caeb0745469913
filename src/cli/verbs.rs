//! One set of verbs for both platforms: `vigil get rollout|promote|abort|retry|pause|resume`
//! act on a running `vigil run` when one is found, else on the Kubernetes cluster, and say
//! which. When neither is there they say what to do instead of printing a client error.
//!
//! Where a verb acts, first match wins:
//! 1. `--cluster`: the cluster;
//! 2. `--admin ADDR` / `--state-dir DIR` (or `VIGIL_ADMIN` / `VIGIL_STATE_DIR`): that `vigil run`;
//! 3. a `vigil run` whose state directory is `./.vigil` (its `admin.token` is there);
//! 4. a cluster configured for kubectl (`KUBECONFIG`, `~/.kube/config`, or in a pod);
//! 5. neither: an error saying how to get one.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::local::{ADMIN_ENV, Connection, LocalCommand, STATE_DIR_ENV};
use crate::platform::local::admin::{ADMIN_TOKEN_ENV, ADMIN_TOKEN_FILE};

/// Exit code: the verb was refused because it would do nothing (promote on a Healthy rollout,
/// retry of a canary that was not rolled back, abort of one that was, …).
pub const EXIT_NOTHING_DONE: i32 = 3;

/// The state directory `vigil run` uses by default.
pub const DEFAULT_STATE_DIR: &str = ".vigil";

/// The exit codes every verb documents.
pub const EXIT_CODES_HELP: &str = "Exit code: 0 done, 1 failed (not found, unreachable, \
refused), 2 bad usage, 3 nothing done because it would change nothing (the reason is printed).";

/// Where a verb acts, when the default search is not wanted.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Location {
    /// Act on the `vigil run` with this admin endpoint.
    #[arg(long, env = ADMIN_ENV, value_name = "ADDR")]
    pub admin: Option<SocketAddr>,
    /// Act on the `vigil run` with this state directory (default: `.vigil` when a `vigil run`
    /// uses it).
    #[arg(long, env = STATE_DIR_ENV, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// The admin token of that `vigil run`, instead of reading it from its state directory.
    #[arg(long, env = ADMIN_TOKEN_ENV, hide_env_values = true)]
    pub token: Option<String>,
    /// Act through the Kubernetes API even when a `vigil run` is found here.
    #[arg(long)]
    pub cluster: bool,
}

/// What was found on this machine, read once by [`Probe::look`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// `./.vigil/admin.token` exists: a `vigil run` started here is running.
    pub local_run: bool,
    /// A kubeconfig or an in-cluster service account is there.
    pub cluster_config: bool,
}

impl Probe {
    /// Looks at the working directory, `KUBECONFIG`, `~/.kube/config` and the in-cluster
    /// environment.
    pub fn look() -> Self {
        let kubeconfig = std::env::var_os("KUBECONFIG")
            .is_some_and(|paths| std::env::split_paths(&paths).any(|path| path.is_file()));
        let home_config = std::env::var_os("HOME")
            .is_some_and(|home| Path::new(&home).join(".kube/config").is_file());
        let in_cluster = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
        Self {
            local_run: Path::new(DEFAULT_STATE_DIR)
                .join(ADMIN_TOKEN_FILE)
                .is_file(),
            cluster_config: kubeconfig || home_config || in_cluster,
        }
    }
}

/// Where the verb acts.
#[derive(Debug, Clone)]
pub enum Found {
    /// A running `vigil run`.
    Local(Connection),
    /// The Kubernetes cluster of the kubeconfig.
    Cluster,
}

/// Neither a `vigil run` nor a cluster.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "no running `vigil run` found here (no {DEFAULT_STATE_DIR}/{ADMIN_TOKEN_FILE}) and no \
     Kubernetes cluster configured (no KUBECONFIG, ~/.kube/config or in-cluster account). \
     Start `vigil run ROLLOUT.yaml` in this directory, or point at one with --state-dir DIR \
     (or {STATE_DIR_ENV}) / --admin ADDR (or {ADMIN_ENV}); for a cluster, configure kubectl"
)]
pub struct NothingFound;

/// Chooses where a verb acts (the rules in the module docs).
pub fn choose(location: &Location, probe: &Probe) -> Result<Found, NothingFound> {
    if location.cluster {
        return Ok(Found::Cluster);
    }
    if location.admin.is_some() || location.state_dir.is_some() || probe.local_run {
        let state_dir = location
            .state_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
        return Ok(Found::Local(Connection::new(
            location.admin,
            state_dir,
            location.token.clone(),
        )));
    }
    if probe.cluster_config {
        return Ok(Found::Cluster);
    }
    Err(NothingFound)
}

/// Finds where to act and says so on stderr; `None` (after printing why) when nowhere.
pub fn locate(location: &Location) -> Option<Found> {
    match choose(location, &Probe::look()) {
        Ok(found) => {
            match &found {
                Found::Local(connection) => eprintln!(
                    "vigil: using the local `vigil run` at {} (state dir {})",
                    connection.admin,
                    connection.state_dir.display()
                ),
                Found::Cluster => eprintln!("vigil: using the Kubernetes cluster (kubeconfig)"),
            }
            Some(found)
        }
        Err(error) => {
            eprintln!("vigil: {error}");
            None
        }
    }
}

/// Runs `command` on the `vigil run` found, or `cluster` on the cluster.
pub fn dispatch(location: &Location, local: LocalCommand, cluster: impl FnOnce() -> i32) -> i32 {
    match locate(location) {
        Some(Found::Local(connection)) => super::local::run_command(&connection, &local, "vigil"),
        Some(Found::Cluster) => cluster(),
        None => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(local_run: bool, cluster_config: bool) -> Probe {
        Probe {
            local_run,
            cluster_config,
        }
    }

    #[test]
    fn a_local_run_wins_over_the_cluster_unless_asked() {
        let found = choose(&Location::default(), &probe(true, true)).expect("found");
        assert!(
            matches!(found, Found::Local(ref c) if c.state_dir == Path::new(".vigil")),
            "{found:?}"
        );
        let cluster = Location {
            cluster: true,
            ..Location::default()
        };
        assert!(matches!(
            choose(&cluster, &probe(true, true)),
            Ok(Found::Cluster)
        ));
        assert!(matches!(
            choose(&Location::default(), &probe(false, true)),
            Ok(Found::Cluster)
        ));
    }

    #[test]
    fn a_named_state_dir_or_admin_is_local_even_without_a_run_here() {
        let dir = Location {
            state_dir: Some("/tmp/elsewhere".into()),
            ..Location::default()
        };
        let found = choose(&dir, &probe(false, true)).expect("found");
        assert!(matches!(found, Found::Local(ref c) if c.state_dir == Path::new("/tmp/elsewhere")));
        let admin = Location {
            admin: Some("127.0.0.1:9911".parse().expect("addr")),
            ..Location::default()
        };
        let found = choose(&admin, &probe(false, false)).expect("found");
        assert!(matches!(found, Found::Local(ref c) if c.admin.port() == 9911));
    }

    #[test]
    fn neither_says_what_to_do() {
        let error = choose(&Location::default(), &probe(false, false)).expect_err("nothing");
        let text = error.to_string();
        for hint in [
            "vigil run",
            "--state-dir",
            "VIGIL_ADMIN",
            "configure kubectl",
        ] {
            assert!(text.contains(hint), "{hint} missing in {text}");
        }
    }
}

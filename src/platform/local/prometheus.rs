//! A real Prometheus for `vigil demo`: started on `127.0.0.1:0` in a temp dir with a scrape
//! config, its bound port read from its log line `msg="Listening on" address=127.0.0.1:NNNNN`.
//!
//! It runs under a tiny `sh` watchdog that kills it when our end of its stdin pipe closes, so
//! Prometheus never outlives vigil, even when vigil is killed with SIGKILL.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use url::Url;

/// `sh -c` script: start `$1` with the remaining arguments, kill it at EOF on stdin (kept as
/// fd 3 because background jobs get /dev/null as stdin), exit with its status.
const WATCHDOG: &str = r#"exec 3<&0
bin="$1"; shift
"$bin" "$@" </dev/null 3<&- &
pid=$!
(cat <&3 >/dev/null; kill -KILL "$pid" 2>/dev/null) &
exec 3<&-
wait "$pid""#;

/// How long Prometheus may take to bind and become ready.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Exit status of `sh` when the command is not found.
const EXIT_NOT_FOUND: i32 = 127;

/// Why Prometheus could not be started.
#[derive(Debug, thiserror::Error)]
pub enum PrometheusError {
    /// The `prometheus` binary is not installed.
    #[error(
        "failed to start Prometheus: `{binary}` not found on PATH; run `make demo` (it installs \
         Prometheus: apt-get install -y --no-install-recommends prometheus) or set VIGIL_PROMETHEUS"
    )]
    StartPrometheusNotFound {
        /// The binary looked for.
        binary: String,
    },
    /// The temp dir or config could not be written.
    #[error("failed to prepare Prometheus' directory {path}: {source}")]
    PrepareDir {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The process could not be spawned.
    #[error("failed to start Prometheus (via sh): {source}")]
    SpawnPrometheus {
        /// The cause.
        source: std::io::Error,
    },
    /// It exited or did not become ready in time.
    #[error("Prometheus {what} before becoming ready; last log lines:\n{log}")]
    WaitReady {
        /// `exited (status)` or `timed out`.
        what: String,
        /// The last log lines.
        log: String,
    },
}

/// `prometheus`, or `$VIGIL_PROMETHEUS`.
pub fn prometheus_bin() -> String {
    std::env::var("VIGIL_PROMETHEUS").unwrap_or_else(|_| "prometheus".to_owned())
}

/// A scrape config for `targets`, scraped every second (so a rate over a few seconds already
/// has samples), each target labelled with `job`.
pub fn scrape_config(job: &str, targets: &[std::net::SocketAddr]) -> String {
    let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
    format!(
        "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
         scrape_configs:\n  - job_name: {job}\n    static_configs: [{{targets: [{}]}}]\n",
        targets.join(", ")
    )
}

/// A running Prometheus, killed on drop (its temp dir is then removed).
pub struct Prometheus {
    child: Child,
    url: Url,
    log: Arc<Mutex<Vec<String>>>,
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for Prometheus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prometheus")
            .field("url", &self.url.as_str())
            .field("pid", &self.child.id())
            .finish()
    }
}

/// Extracts the port from `msg="Listening on" address=127.0.0.1:NNNNN`.
pub fn listening_port(line: &str) -> Option<u16> {
    if !line.contains("msg=\"Listening on\"") {
        return None;
    }
    let address = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("address="))?;
    address.rsplit(':').next()?.trim_matches('"').parse().ok()
}

/// True once Prometheus on 127.0.0.1:`port` answers `/-/ready` with 200.
pub fn is_ready(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(b"GET /-/ready HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200")
}

impl Prometheus {
    /// Starts Prometheus with `config_yaml` and an empty TSDB in a temp dir; returns once it
    /// answers `/-/ready`. Blocking (at most a few seconds): call it from `spawn_blocking` or
    /// before the runtime's work starts.
    pub fn start(config_yaml: &str) -> Result<Self, PrometheusError> {
        let binary = prometheus_bin();
        let dir = tempfile::Builder::new()
            .prefix("vigil-prometheus-")
            .tempdir()
            .map_err(|source| PrometheusError::PrepareDir {
                path: std::env::temp_dir(),
                source,
            })?;
        let config = dir.path().join("prometheus.yml");
        std::fs::write(&config, config_yaml).map_err(|source| PrometheusError::PrepareDir {
            path: config.clone(),
            source,
        })?;
        let data = dir.path().join("data");
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(WATCHDOG)
            .arg("sh")
            .arg(&binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg("--web.listen-address=127.0.0.1:0")
            .current_dir(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .map_err(|source| PrometheusError::SpawnPrometheus { source })?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let (port_tx, port_rx) = mpsc::channel();
        let Some(stderr) = child.stderr.take() else {
            return Err(PrometheusError::SpawnPrometheus {
                source: std::io::Error::other("no stderr pipe"),
            });
        };
        let thread_log = Arc::clone(&log);
        // Keep draining stderr for the whole life of the process: a full pipe would block it.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(port) = listening_port(&line) {
                    let _ = port_tx.send(port);
                }
                let mut log = thread_log.lock().unwrap_or_else(PoisonError::into_inner);
                // Only the tail matters, for error messages.
                if log.len() >= 200 {
                    log.remove(0);
                }
                log.push(line);
            }
        });
        let mut server = Prometheus {
            child,
            url: Url::parse("http://127.0.0.1:9090/").map_err(|e| {
                PrometheusError::SpawnPrometheus {
                    source: std::io::Error::other(e),
                }
            })?,
            log,
            dir,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        let port = loop {
            match port_rx.recv_timeout(Duration::from_millis(50)) {
                Ok(port) => break port,
                Err(mpsc::RecvTimeoutError::Timeout) => server.check(deadline, &binary)?,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // The log ended without the line: Prometheus exited; wait for its status.
                    std::thread::sleep(Duration::from_millis(100));
                    server.check(Instant::now(), &binary)?;
                }
            }
        };
        server.url = Url::parse(&format!("http://127.0.0.1:{port}/")).map_err(|e| {
            PrometheusError::SpawnPrometheus {
                source: std::io::Error::other(e),
            }
        })?;
        while !is_ready(port) {
            server.check(deadline, &binary)?;
            std::thread::sleep(Duration::from_millis(20));
        }
        tracing::info!(url = %server.url, dir = %server.dir.path().display(), "prometheus ready");
        Ok(server)
    }

    fn check(&mut self, deadline: Instant, binary: &str) -> Result<(), PrometheusError> {
        let exited = self.child.try_wait().ok().flatten();
        if exited.is_some_and(|status| status.code() == Some(EXIT_NOT_FOUND)) {
            return Err(PrometheusError::StartPrometheusNotFound {
                binary: binary.to_owned(),
            });
        }
        if exited.is_some() || Instant::now() >= deadline {
            std::thread::sleep(Duration::from_millis(100));
            let log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
            let tail: Vec<String> = log.iter().rev().take(10).rev().cloned().collect();
            return Err(PrometheusError::WaitReady {
                what: match exited {
                    Some(status) => format!("exited ({status})"),
                    None => "timed out".to_owned(),
                },
                log: tail.join("\n"),
            });
        }
        Ok(())
    }

    /// Base URL, e.g. `http://127.0.0.1:41234/`.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The temp dir holding config and data.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        // Closing the watchdog's stdin kills Prometheus; the shell then exits.
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_listening_line() {
        let line = r#"ts=2026-11-22T10:00:00.000Z caller=web.go:562 level=info component=web msg="Listening on" address=127.0.0.1:32899"#;
        assert_eq!(listening_port(line), Some(32899));
        assert_eq!(listening_port("msg=\"Server is ready\""), None);
    }

    #[test]
    fn scrape_config_lists_targets() {
        let config = scrape_config("vigil", &["127.0.0.1:1234".parse().expect("addr")]);
        assert!(config.contains("scrape_interval: 1s"));
        assert!(config.contains("'127.0.0.1:1234'"));
    }
}

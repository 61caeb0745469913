//! A real Prometheus for tests.
//!
//! Deterministic data: build a [`Fixture`] (OpenMetrics with fixed timestamps), then
//! [`Fixture::start`] turns it into TSDB blocks with `promtool tsdb create-blocks-from
//! openmetrics` and starts `prometheus` on them. Query with explicit times inside
//! `[fixture.start, fixture.end]`; the data ends at [`T_END`] by default.
//!
//! Live data: [`PrometheusServer::start_with_config`] starts Prometheus with a scrape config.
//!
//! Prometheus listens on `127.0.0.1:0`; the bound port is read from its log. The process is
//! killed when the [`PrometheusServer`] is dropped (its temp dir is then removed), and also
//! when the test process exits, so a server shared through a `static` does not outlive the
//! tests.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use url::Url;

/// Default end of fixture data (unix seconds, 2023-11-14T22:13:20Z). Fixed and in the past,
/// so results never depend on the wall clock.
pub const T_END: i64 = 1_700_000_000;

/// `sh -c` script: start `$1` with the remaining arguments, kill it at EOF on stdin (kept as
/// fd 3 because background jobs get /dev/null as stdin), exit with its status.
const WATCHDOG: &str = r#"exec 3<&0
bin="$1"; shift
"$bin" "$@" </dev/null 3<&- &
pid=$!
(cat <&3 >/dev/null; kill -KILL "$pid" 2>/dev/null) &
exec 3<&-
wait "$pid""#;

/// How long Prometheus may take to bind and become ready before a test fails.
const START_TIMEOUT: Duration = Duration::from_secs(20);

const HOW_TO_INSTALL: &str = "run `make test`, which installs Prometheus \
     (apt-get install -y --no-install-recommends prometheus)";

fn binary(env_var: &str, default: &str) -> String {
    std::env::var(env_var).unwrap_or_else(|_| default.to_owned())
}

/// `prometheus` (override with `VIGIL_PROMETHEUS`).
pub fn prometheus_bin() -> String {
    binary("VIGIL_PROMETHEUS", "prometheus")
}

/// `promtool` (override with `VIGIL_PROMTOOL`).
pub fn promtool_bin() -> String {
    binary("VIGIL_PROMTOOL", "promtool")
}

/// Runs a command to completion; a missing binary fails the test with install instructions.
fn run_tool(mut command: Command, what: &str) -> std::process::Output {
    match command.output() {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("{what} not found on PATH: {HOW_TO_INSTALL}")
        }
        Err(e) => panic!("cannot run {what}: {e}"),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
    Unknown,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
            Kind::Unknown => "unknown",
        }
    }
}

#[derive(Debug)]
struct Family {
    name: String,
    kind: Kind,
    /// Sample lines, already in OpenMetrics order (each series in increasing time order).
    lines: Vec<String>,
}

/// OpenMetrics test data with fixed timestamps: samples every `step` seconds in
/// `[start, end]`.
#[derive(Debug)]
pub struct Fixture {
    /// First sample time (unix seconds).
    pub start: i64,
    /// Last sample time (unix seconds).
    pub end: i64,
    /// Seconds between samples.
    pub step: i64,
    families: Vec<Family>,
}

fn escape_label_value(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn series_name(metric: &str, labels: &[(&str, &str)]) -> String {
    let mut out = String::from(metric);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{k}=\"{}\"", escape_label_value(v));
        }
        out.push('}');
    }
    out
}

/// Float formatting OpenMetrics accepts (`+Inf`, `-Inf`, `NaN`, plain decimals).
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v:?}")
    }
}

impl Default for Fixture {
    /// Two hours of data ending at [`T_END`], one sample every 15 s.
    fn default() -> Fixture {
        Fixture::new(T_END - 7200, T_END, 15)
    }
}

impl Fixture {
    /// An empty fixture with samples every `step` seconds in `[start, end]`.
    pub fn new(start: i64, end: i64, step: i64) -> Fixture {
        assert!(step > 0 && start <= end, "bad fixture window");
        Fixture {
            start,
            end,
            step,
            families: Vec::new(),
        }
    }

    /// The sample times.
    pub fn times(&self) -> impl Iterator<Item = i64> + use<> {
        let (start, end, step) = (self.start, self.end, self.step);
        (0..)
            .map(move |i| start + i * step)
            .take_while(move |t| *t <= end)
    }

    fn family(&mut self, name: &str, kind: Kind) -> &mut Family {
        // Families must be contiguous in OpenMetrics: append to an existing one.
        let index = match self.families.iter().position(|f| f.name == name) {
            Some(i) => {
                assert_eq!(
                    self.families[i].kind, kind,
                    "family {name} used with two types"
                );
                i
            }
            None => {
                self.families.push(Family {
                    name: name.to_owned(),
                    kind,
                    lines: Vec::new(),
                });
                self.families.len() - 1
            }
        };
        &mut self.families[index]
    }

    /// A counter series with explicit `(time, value)` samples, in increasing time order.
    /// `family` is the name without `_total` (a trailing `_total` is stripped).
    pub fn counter_samples(
        mut self,
        family: &str,
        labels: &[(&str, &str)],
        samples: impl IntoIterator<Item = (i64, f64)>,
    ) -> Fixture {
        let family = family.strip_suffix("_total").unwrap_or(family).to_owned();
        let name = series_name(&format!("{family}_total"), labels);
        let lines: Vec<String> = samples
            .into_iter()
            .map(|(t, v)| format!("{name} {} {t}", number(v)))
            .collect();
        self.family(&family, Kind::Counter).lines.extend(lines);
        self
    }

    /// A counter growing at `per_second` from 0 at `start`: `rate(x[w])` inside the data is
    /// exactly `per_second`.
    pub fn counter(self, family: &str, labels: &[(&str, &str)], per_second: f64) -> Fixture {
        let start = self.start;
        let samples: Vec<(i64, f64)> = self
            .times()
            .map(|t| (t, per_second * (t - start) as f64))
            .collect();
        self.counter_samples(family, labels, samples)
    }

    /// A counter exposed without the `_total` suffix, as legacy exporters such as the NGINX
    /// ingress controller do (`nginx_ingress_controller_requests`): OpenMetrics only allows
    /// that name for the `unknown` type. Grows at `per_second` from 0 at `start`.
    pub fn legacy_counter(
        mut self,
        name: &str,
        labels: &[(&str, &str)],
        per_second: f64,
    ) -> Fixture {
        let start = self.start;
        let series = series_name(name, labels);
        let lines: Vec<String> = self
            .times()
            .map(|t| format!("{series} {} {t}", number(per_second * (t - start) as f64)))
            .collect();
        self.family(name, Kind::Unknown).lines.extend(lines);
        self
    }

    /// A gauge with a constant value.
    pub fn gauge(mut self, family: &str, labels: &[(&str, &str)], value: f64) -> Fixture {
        let name = series_name(family, labels);
        let lines: Vec<String> = self
            .times()
            .map(|t| format!("{name} {} {t}", number(value)))
            .collect();
        self.family(family, Kind::Gauge).lines.extend(lines);
        self
    }

    /// A gauge with explicit `(unix seconds, value)` samples in increasing time order; the
    /// times may fall between seconds (kept to the millisecond, as Prometheus stores them).
    pub fn gauge_samples(
        mut self,
        family: &str,
        labels: &[(&str, &str)],
        samples: impl IntoIterator<Item = (f64, f64)>,
    ) -> Fixture {
        let name = series_name(family, labels);
        let lines: Vec<String> = samples
            .into_iter()
            .map(|(t, v)| format!("{name} {} {t:.3}", number(v)))
            .collect();
        self.family(family, Kind::Gauge).lines.extend(lines);
        self
    }

    /// A histogram whose observations arrive at constant rates.
    ///
    /// `buckets` are `(le, cumulative observations per second)` in increasing `le` order,
    /// without `+Inf` (added with `count_per_second`). `_sum` grows at `sum_per_second`.
    pub fn histogram(
        mut self,
        family: &str,
        labels: &[(&str, &str)],
        buckets: &[(f64, f64)],
        count_per_second: f64,
        sum_per_second: f64,
    ) -> Fixture {
        let start = self.start;
        let times: Vec<i64> = self.times().collect();
        let mut with_inf: Vec<(String, f64)> =
            buckets.iter().map(|(le, r)| (number(*le), *r)).collect();
        with_inf.push(("+Inf".into(), count_per_second));
        let mut lines = Vec::new();
        // Series by series, each in time order (promtool needs per-series time order).
        for (le, rate) in &with_inf {
            let mut l = labels.to_vec();
            l.push(("le", le));
            let name = series_name(&format!("{family}_bucket"), &l);
            for t in &times {
                lines.push(format!("{name} {} {t}", number(rate * (t - start) as f64)));
            }
        }
        for (suffix, rate) in [("_count", count_per_second), ("_sum", sum_per_second)] {
            let name = series_name(&format!("{family}{suffix}"), labels);
            for t in &times {
                lines.push(format!("{name} {} {t}", number(rate * (t - start) as f64)));
            }
        }
        self.family(family, Kind::Histogram).lines.extend(lines);
        self
    }

    /// The OpenMetrics text (`# TYPE` per family, family contiguous, ends with `# EOF`).
    pub fn openmetrics(&self) -> String {
        let mut out = String::new();
        for family in &self.families {
            let _ = writeln!(out, "# TYPE {} {}", family.name, family.kind.as_str());
            for line in &family.lines {
                out.push_str(line);
                out.push('\n');
            }
        }
        out.push_str("# EOF\n");
        out
    }

    /// Writes the fixture, builds TSDB blocks with promtool and starts Prometheus on them.
    pub fn start(&self) -> PrometheusServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let om = dir.path().join("fixture.om");
        std::fs::write(&om, self.openmetrics()).expect("write fixture");
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).expect("data dir");
        let mut promtool = Command::new(promtool_bin());
        promtool
            .args(["tsdb", "create-blocks-from", "openmetrics"])
            .arg(&om)
            .arg(&data);
        let output = run_tool(promtool, "promtool");
        assert!(
            output.status.success(),
            "promtool create-blocks-from failed: {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        // Retention is relative to the newest block; a long one keeps fixed old data.
        PrometheusServer::spawn(dir, "", &["--storage.tsdb.retention.time=100y"])
    }
}

/// A running Prometheus, killed on drop.
pub struct PrometheusServer {
    child: Child,
    url: Url,
    log: Arc<Mutex<Vec<String>>>,
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for PrometheusServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrometheusServer")
            .field("url", &self.url.as_str())
            .field("pid", &self.child.id())
            .finish()
    }
}

// Log parsing and readiness are the crate's own (`vigil::platform::local::prometheus`).
use vigil::platform::local::prometheus::{is_ready, listening_port};

impl PrometheusServer {
    /// Starts Prometheus with `config_yaml` (e.g. scrape configs) and an empty TSDB, for live
    /// end-to-end tests. Samples become queryable a few seconds after the first scrape.
    pub fn start_with_config(config_yaml: &str) -> PrometheusServer {
        let dir = tempfile::tempdir().expect("temp dir");
        PrometheusServer::spawn(dir, config_yaml, &[])
    }

    fn spawn(dir: tempfile::TempDir, config_yaml: &str, extra: &[&str]) -> PrometheusServer {
        let config = dir.path().join("prometheus.yml");
        std::fs::write(&config, config_yaml).expect("write config");
        let data: PathBuf = dir.path().join("data");
        // Run Prometheus under a tiny shell watchdog that kills it when our end of its stdin
        // pipe closes, i.e. when this server is dropped *or* when the test process exits
        // without dropping it (a server kept in a `static` is never dropped).
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(WATCHDOG)
            .arg("sh")
            .arg(prometheus_bin())
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg("--web.listen-address=127.0.0.1:0")
            .args(extra)
            .current_dir(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => panic!("cannot start prometheus (via sh): {e}"),
        };
        let log = Arc::new(Mutex::new(Vec::new()));
        let (port_tx, port_rx) = mpsc::channel();
        let stderr = child.stderr.take().expect("piped stderr");
        let thread_log = Arc::clone(&log);
        // Keep draining stderr for the whole life of the process: a full pipe would block it.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(port) = listening_port(&line) {
                    let _ = port_tx.send(port);
                }
                if let Ok(mut log) = thread_log.lock() {
                    log.push(line);
                }
            }
        });
        let mut server = PrometheusServer {
            child,
            url: Url::parse("http://127.0.0.1:0/").expect("static url"),
            log,
            dir,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        let port = loop {
            match port_rx.recv_timeout(Duration::from_millis(50)) {
                Ok(port) => break port,
                Err(mpsc::RecvTimeoutError::Timeout) => server.fail_if_exited(deadline),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    server.fail_if_exited(Instant::now());
                }
            }
        };
        server.url = Url::parse(&format!("http://127.0.0.1:{port}/")).expect("valid url");
        while !is_ready(port) {
            server.fail_if_exited(deadline);
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    /// Panics with the log if Prometheus exited, or if `deadline` has passed.
    fn fail_if_exited(&mut self, deadline: Instant) {
        let exited = self.child.try_wait().ok().flatten();
        if exited.is_some_and(|status| status.code() == Some(127)) {
            panic!("prometheus not found on PATH: {HOW_TO_INSTALL}");
        }
        if exited.is_some() || Instant::now() >= deadline {
            // Give the log thread a moment to collect the last lines.
            std::thread::sleep(Duration::from_millis(100));
            panic!(
                "prometheus {} before becoming ready; log:\n{}",
                match exited {
                    Some(status) => format!("exited ({status})"),
                    None => "timed out".to_owned(),
                },
                self.log().join("\n")
            );
        }
    }

    /// Base URL, e.g. `http://127.0.0.1:41234/`.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The temp dir holding config and data.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Prometheus' log lines so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        // Closing the watchdog's stdin kills Prometheus; the shell then exits.
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

#[test]
fn parses_listening_line() {
    let line = r#"ts=2026-11-22T10:00:00.000Z caller=web.go:562 level=info component=web msg="Listening on" address=127.0.0.1:32899"#;
    assert_eq!(listening_port(line), Some(32899));
    assert_eq!(listening_port("msg=\"Server is ready\""), None);
}

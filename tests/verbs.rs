//! Issue 16, frictions 1, 4 and 5: one set of verbs (`vigil get|promote|abort|retry|pause|
//! resume`) finds the `vigil run` started in the working directory by itself (its `.vigil`
//! state directory, on a non-default admin port), says where it acts, refuses a verb that
//! would do nothing with the reason and exit code 3, and says what to do when neither a
//! `vigil run` nor a cluster is there. A real `vigil run` runs `vigil demo-app` processes.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const VIGIL: &str = env!("CARGO_BIN_EXE_vigil");

/// The longest any wait may take before the test fails.
const WAIT: Duration = Duration::from_secs(120);

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

/// A Rollout of `vigil demo-app --version VERSION` that stops at a pause step.
fn rollout(listen: u16, version: &str) -> String {
    format!(
        r#"apiVersion: vigil.dev/v1alpha1
kind: Rollout
metadata:
  name: shop
spec:
  replicas: 1
  selector:
    matchLabels:
      app: shop
  template:
    metadata:
      labels:
        app: shop
    spec:
      containers:
        - name: app
          image: shop:{version}
          command: [{VIGIL:?}, "demo-app"]
          args: ["--version", "{version}"]
          readinessProbe:
            httpGet:
              path: /healthz
              port: 8080
  strategy:
    canary:
      trafficRouting:
        local:
          listen: 127.0.0.1:{listen}
      abortScaleDownDelaySeconds: 0
      steps:
        - setWeight: 50
        - pause: {{}}
"#
    )
}

/// `vigil run` started in `dir` with its default state directory (`.vigil`); stopped with
/// SIGTERM when dropped.
struct Run {
    child: Option<Child>,
    log: PathBuf,
}

impl Run {
    fn start(dir: &Path, file: &Path, admin_port: u16, extra: &[&str]) -> Run {
        let log = dir.join("run.log");
        let child = Command::new(VIGIL)
            .arg("run")
            .arg(file)
            .args(["--admin", &format!("127.0.0.1:{admin_port}")])
            .args(extra)
            .current_dir(dir)
            .env_remove("RUST_LOG")
            .env_remove("VIGIL_LOG_FORMAT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start vigil run");
        Run {
            child: Some(child),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Run {
    /// SIGTERM, then SIGKILL after 15 s.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Runs `vigil ARGS` in `dir` with no cluster configured and no verb environment.
fn vigil(dir: &Path, args: &[&str]) -> Output {
    Command::new(VIGIL)
        .args(args)
        .current_dir(dir)
        .env("HOME", dir)
        .env_remove("KUBECONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("VIGIL_ADMIN")
        .env_remove("VIGIL_STATE_DIR")
        .env_remove("VIGIL_ADMIN_TOKEN")
        .output()
        .expect("run vigil")
}

fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Polls `vigil get rollout shop` (found by itself) until its line contains `wanted`.
fn wait_for(dir: &Path, run: &Run, wanted: &str) -> String {
    let deadline = Instant::now() + WAIT;
    let mut last = String::new();
    while Instant::now() < deadline {
        let output = vigil(dir, &["get", "rollout", "shop"]);
        let (stdout, stderr) = text(&output);
        if output.status.success() && stdout.contains(wanted) {
            assert!(
                stderr.contains("using the local `vigil run` at 127.0.0.1:"),
                "says where it acts: {stderr}"
            );
            return stdout;
        }
        last = format!("{stdout}{stderr}");
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!(
        "no {wanted:?} within {WAIT:?}; last: {last}\nlog:\n{}",
        run.log()
    );
}

/// Runs a verb expected to do nothing: exit 3 and `why` on stderr.
fn refused(dir: &Path, args: &[&str], why: &str) {
    let output = vigil(dir, args);
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(3), "{args:?}: {stdout}{stderr}");
    assert!(stderr.contains("nothing done: rollout shop"), "{stderr}");
    assert!(
        stderr.contains(why),
        "{args:?}: {why:?} missing in {stderr}"
    );
}

fn done(dir: &Path, args: &[&str], says: &str) {
    let output = vigil(dir, args);
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(0), "{args:?}: {stdout}{stderr}");
    assert!(
        stdout.contains(says),
        "{args:?}: {says:?} missing in {stdout}"
    );
}

#[test]
fn the_verbs_find_the_local_run_and_refuse_what_would_do_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let dir = dir.path();
    let listen = free_port();
    let file = dir.join("rollout.yaml");
    std::fs::write(&file, rollout(listen, "v1")).expect("write");
    // Not the default admin port: the verbs read it from `.vigil/admin.addr`.
    let run = Run::start(dir, &file, free_port(), &[]);

    let healthy = wait_for(dir, &run, "Healthy");
    assert!(
        healthy.contains("stable "),
        "no step/weight when Healthy: {healthy}"
    );
    assert!(!healthy.contains("weight"), "{healthy}");
    refused(dir, &["promote", "shop"], "nothing to promote");
    refused(dir, &["abort", "shop"], "nothing to abort");
    refused(dir, &["resume", "shop"], "not paused");

    std::fs::write(&file, rollout(listen, "v2")).expect("write v2");
    wait_for(dir, &run, "Paused");
    refused(dir, &["retry", "shop"], "`vigil promote shop` finishes it");
    refused(
        dir,
        &["retry", "shop", "--analysis"],
        "no analysis is waiting",
    );
    done(dir, &["pause", "shop"], "rollout shop: paused");
    refused(dir, &["pause", "shop"], "already paused");
    done(dir, &["resume", "shop"], "rollout shop: resumed");
    done(dir, &["abort", "shop"], "abort accepted");
    wait_for(dir, &run, "Aborted");
    refused(dir, &["abort", "shop"], "already rolled back");
    refused(
        dir,
        &["promote", "shop"],
        "`vigil retry shop` starts it again",
    );
    done(dir, &["retry", "shop"], "retry accepted");
    wait_for(dir, &run, "Paused");
    done(dir, &["promote", "shop"], "promote accepted");
    wait_for(dir, &run, "Healthy");

    // `vigil local` stays as an alias, and `local apply` says what it applied and names the
    // file in errors (not `<apply>`, not raw JSON).
    let output = vigil(dir, &["local", "apply", file.to_str().expect("utf-8")]);
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}{stderr}");
    assert_eq!(
        stdout.trim(),
        format!("applied {}: rollout shop", file.display())
    );
    let broken = dir.join("broken.yaml");
    std::fs::write(
        &broken,
        rollout(listen, "v3").replace("  steps:", "  stepz:"),
    )
    .expect("write");
    let output = vigil(dir, &["local", "apply", broken.to_str().expect("utf-8")]);
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("broken.yaml"), "names the file: {stderr}");
    assert!(!stderr.contains("<apply>"), "{stderr}");

    // Friction 6: the log went to a file: no colour codes, phases by name, Warning events
    // at WARN.
    let log = run.log();
    assert!(
        !log.contains('\u{1b}'),
        "ANSI escape codes in a file:\n{log}"
    );
    assert!(!log.contains("Some("), "Debug formatting:\n{log}");
    assert!(log.contains("phase=Healthy"), "{log}");
    assert!(
        log.lines()
            .any(|line| line.contains(" WARN ") && line.contains("reason=RolloutAborted")),
        "the abort event at WARN:\n{log}"
    );
}

/// Issue 16, friction 6: `--log-format json` writes JSON lines; `--quiet` keeps warnings.
#[test]
fn run_logs_json_lines_or_only_warnings() {
    for (flags, json) in [(&["--log-format", "json"][..], true), (&["--quiet"], false)] {
        let dir = tempfile::tempdir().expect("temp dir");
        let dir = dir.path();
        let file = dir.join("rollout.yaml");
        std::fs::write(&file, rollout(free_port(), "v1")).expect("write");
        let mut run = Run::start(dir, &file, free_port(), flags);
        wait_for(dir, &run, "Healthy");
        run.stop();
        let log = run.log();
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| !l.starts_with("vigil run:"))
            .collect();
        if json {
            assert!(!lines.is_empty(), "{log}");
            for line in &lines {
                let value: serde_json::Value =
                    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
                assert!(value.get("level").is_some(), "{line}");
            }
            assert!(log.contains("\"phase\":\"Healthy\""), "{log}");
        } else {
            assert!(
                lines.iter().all(|l| !l.contains(" INFO ")),
                "--quiet logs no INFO:\n{log}"
            );
        }
    }
}

#[test]
fn with_neither_a_run_nor_a_cluster_the_verbs_say_what_to_do() {
    let dir = tempfile::tempdir().expect("temp dir");
    for verb in [
        &["promote", "shop"][..],
        &["get", "rollout", "shop"],
        &["abort", "shop"],
    ] {
        let output = vigil(dir.path(), verb);
        let (stdout, stderr) = text(&output);
        assert_eq!(output.status.code(), Some(1), "{verb:?}: {stdout}{stderr}");
        assert!(
            stderr.contains("no running `vigil run` found here"),
            "{stderr}"
        );
        assert!(stderr.contains("--state-dir"), "{stderr}");
        assert!(
            !stderr.contains("infer"),
            "no kube-rs error chain: {stderr}"
        );
    }
}

/// Issue 16, friction 2: `vigil run --load RPS` sends the demo's load to each Rollout's proxy
/// and says how much at the end.
#[test]
fn run_with_load_sends_requests_to_the_proxy() {
    let dir = tempfile::tempdir().expect("temp dir");
    let dir = dir.path();
    let listen = free_port();
    let file = dir.join("rollout.yaml");
    std::fs::write(&file, rollout(listen, "v1")).expect("write");
    let metrics_port = free_port();
    let yaml = rollout(listen, "v1").replace(
        "  name: shop\n",
        &format!(
            "  name: shop\n  annotations:\n    vigil.dev/metrics-listen: 127.0.0.1:{metrics_port}\n"
        ),
    );
    std::fs::write(&file, yaml).expect("write");
    let mut run = Run::start(dir, &file, free_port(), &["--load", "50"]);
    wait_for(dir, &run, "Healthy");
    // Wait on the engine's own word that the load runs, then on answered requests: the
    // proxy's /routing is not needed, the summary at stop counts them.
    let deadline = Instant::now() + WAIT;
    while !run
        .log()
        .contains("sending 50 requests/s to http://127.0.0.1:")
    {
        assert!(Instant::now() < deadline, "no load started:\n{}", run.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    // Wait until the proxy counted answered requests it did not send itself.
    let metrics = format!("http://127.0.0.1:{metrics_port}/metrics");
    loop {
        let body = http_get(metrics_port, "/metrics");
        if body.lines().any(|line| {
            line.starts_with("http_requests_total{")
                && line.contains("code=\"200\"")
                && line.rsplit(' ').next().and_then(|n| n.parse::<f64>().ok()) >= Some(10.0)
        }) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{metrics} counted no load:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    run.stop();
    let log = run.log();
    let sent = log
        .lines()
        .find_map(|line| {
            line.split("load sent ")
                .nth(1)?
                .split(' ')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .unwrap_or_else(|| panic!("no load summary in\n{log}"));
    assert!(sent > 0, "{log}");
    assert!(log.contains("0 answered 5xx"), "{log}");
}

/// A plain HTTP/1.0 GET on loopback; the body, or empty when it cannot be read.
fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return String::new();
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
}

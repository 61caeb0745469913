//! The local platform's pieces against real HTTP servers and real processes: the weighted proxy
//! in front of demo apps, the supervisor running the real `vigil demo-app` binary, the state
//! directory and the load generator.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::time::timeout;
use vigil::platform::local::demo_app::{DemoApp, DemoAppConfig};
use vigil::platform::local::proxy::{Backend, ProxyError, REVISION_HEADER, WeightedProxy};

const LOOPBACK_ANY: &str = "127.0.0.1:0";

/// Every test body runs under this limit: a hang is a failure, not a stuck CI job.
const TEST_TIMEOUT: Duration = Duration::from_secs(60);

fn any_port() -> SocketAddr {
    LOOPBACK_ANY.parse().expect("literal address")
}

type TestClient = Client<HttpConnector, Empty<Bytes>>;

fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// One GET: status, the revision header (if any), body, content type.
struct Got {
    status: u16,
    revision: Option<String>,
    content_type: Option<String>,
    body: String,
}

async fn get(client: &TestClient, url: &str) -> Got {
    let uri: hyper::Uri = url.parse().expect("test URL");
    let response = timeout(Duration::from_secs(10), client.get(uri))
        .await
        .expect("request timed out")
        .expect("request failed");
    let status = response.status().as_u16();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let revision = header(REVISION_HEADER);
    let content_type = header("content-type");
    let body = response
        .into_body()
        .collect()
        .await
        .expect("read body")
        .to_bytes();
    Got {
        status,
        revision,
        content_type,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

async fn demo_app(version: &str, error_rate: f64) -> DemoApp {
    DemoApp::bind(
        any_port(),
        DemoAppConfig {
            version: version.to_owned(),
            error_rate,
            ..DemoAppConfig::default()
        },
    )
    .await
    .expect("bind demo app")
}

/// The value of each sample of `family` in an exposition, keyed by its label text.
fn samples(exposition: &str, family: &str) -> BTreeMap<String, f64> {
    exposition
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let rest = line.strip_prefix(family)?.strip_prefix('{')?;
            let (labels, value) = rest.split_once("} ")?;
            Some((labels.to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}

/// A port that was free a moment ago and is now closed: connections to it are refused.
fn closed_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind(LOOPBACK_ANY).expect("bind");
    listener.local_addr().expect("local addr")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_splits_exactly_by_weight_and_metrics_count_every_request() {
    timeout(TEST_TIMEOUT, async {
        let stable_apps = [demo_app("v1", 0.0).await, demo_app("v1", 0.0).await];
        // A quarter of the canary's answers are 500: the metrics must show them per code.
        let canary_app = demo_app("v2", 0.25).await;
        let proxy = WeightedProxy::bind(any_port(), any_port(), "shop".into())
            .await
            .expect("bind proxy");
        let stable = Backend {
            revision: "rev-stable".into(),
            addrs: stable_apps.iter().map(DemoApp::local_addr).collect(),
        };
        let canary = Backend {
            revision: "rev-canary".into(),
            addrs: vec![canary_app.local_addr()],
        };
        proxy
            .set_backends(stable.clone(), Some(canary.clone()), 20)
            .expect("set backends");
        let state = proxy.current();
        assert_eq!(state.canary_weight, 20);
        assert_eq!(state.canary.as_ref(), Some(&canary));

        // 1000 requests, 8 at a time: the split is exact under concurrency too.
        let client = client();
        let url = format!("http://{}/", proxy.local_addr());
        let mut by_revision_code: BTreeMap<(String, u16), u32> = BTreeMap::new();
        for _ in 0..125 {
            let batch: Vec<_> = (0..8)
                .map(|_| {
                    let client = client.clone();
                    let url = url.clone();
                    tokio::spawn(async move { get(&client, &url).await })
                })
                .collect();
            for task in batch {
                let got = task.await.expect("request task");
                let revision = got.revision.expect("revision header");
                let expected_body = if revision == "rev-canary" { "v2" } else { "v1" };
                assert!(got.body.contains(expected_body), "{revision}: {}", got.body);
                *by_revision_code.entry((revision, got.status)).or_default() += 1;
            }
        }
        let count = |rev: &str, code: u16| {
            by_revision_code
                .get(&(rev.to_owned(), code))
                .copied()
                .unwrap_or(0)
        };
        assert_eq!(count("rev-stable", 200), 800, "{by_revision_code:?}");
        assert_eq!(
            count("rev-canary", 200) + count("rev-canary", 500),
            200,
            "{by_revision_code:?}"
        );
        assert_eq!(count("rev-canary", 500), 50, "{by_revision_code:?}");

        // The metrics match what was sent, per role and code.
        let metrics = get(&client, &format!("http://{}/metrics", proxy.metrics_addr())).await;
        assert_eq!(metrics.status, 200);
        assert_eq!(
            metrics.content_type.as_deref(),
            Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
        );
        assert!(metrics.body.ends_with("# EOF\n"), "{}", metrics.body);
        assert!(metrics.body.contains("# TYPE http_requests counter"));
        assert!(
            metrics
                .body
                .contains("# TYPE http_request_duration_seconds histogram")
        );
        let requests = samples(&metrics.body, "http_requests_total");
        let expected: BTreeMap<String, f64> = [
            (
                r#"rollout="shop",revision="rev-stable",role="stable",code="200""#,
                800.0,
            ),
            (
                r#"rollout="shop",revision="rev-canary",role="canary",code="200""#,
                150.0,
            ),
            (
                r#"rollout="shop",revision="rev-canary",role="canary",code="500""#,
                50.0,
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        assert_eq!(requests, expected, "{}", metrics.body);
        let counts = samples(&metrics.body, "http_request_duration_seconds_count");
        assert_eq!(
            counts.get(r#"rollout="shop",revision="rev-canary",role="canary""#),
            Some(&200.0)
        );
        assert_eq!(
            counts.get(r#"rollout="shop",revision="rev-stable",role="stable""#),
            Some(&800.0)
        );
        let buckets = samples(&metrics.body, "http_request_duration_seconds_bucket");
        assert_eq!(
            buckets.get(r#"le="+Inf",rollout="shop",revision="rev-stable",role="stable""#),
            Some(&800.0),
            "{}",
            metrics.body
        );

        // Weight 0: every request from now on goes to stable, at once.
        proxy
            .set_backends(stable.clone(), None, 0)
            .expect("set backends");
        assert_eq!(proxy.current().canary, None);
        for _ in 0..50 {
            let got = get(&client, &url).await;
            assert_eq!(got.revision.as_deref(), Some("rev-stable"));
            assert_eq!(got.status, 200);
        }
        proxy.shutdown().await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_skips_a_dead_replica_and_returns_502_when_none_answers() {
    timeout(TEST_TIMEOUT, async {
        let live = demo_app("v1", 0.0).await;
        let proxy = WeightedProxy::bind(any_port(), any_port(), "shop".into())
            .await
            .expect("bind proxy");
        let client = client();
        let url = format!("http://{}/", proxy.local_addr());

        proxy
            .set_backends(
                Backend {
                    revision: "s".into(),
                    addrs: vec![closed_port(), live.local_addr()],
                },
                None,
                0,
            )
            .expect("set backends");
        for _ in 0..20 {
            assert_eq!(get(&client, &url).await.status, 200);
        }

        proxy
            .set_backends(
                Backend {
                    revision: "s".into(),
                    addrs: vec![live.local_addr()],
                },
                Some(Backend {
                    revision: "c".into(),
                    addrs: vec![closed_port(), closed_port()],
                }),
                50,
            )
            .expect("set backends");
        let mut codes = BTreeMap::new();
        for _ in 0..10 {
            let got = get(&client, &url).await;
            *codes
                .entry((got.revision.unwrap_or_default(), got.status))
                .or_insert(0) += 1;
        }
        // The dead canary gets its share and answers 502; nothing spills onto stable.
        assert_eq!(
            codes,
            BTreeMap::from([(("c".to_owned(), 502), 5), (("s".to_owned(), 200), 5)])
        );
        let metrics = proxy.handle().encode_metrics();
        let requests = samples(&metrics, "http_requests_total");
        assert_eq!(
            requests.get(r#"rollout="shop",revision="c",role="canary",code="502""#),
            Some(&5.0),
            "{metrics}"
        );
        // Each of the 5 canary requests tried both dead replicas.
        let errors = samples(&metrics, "vigil_proxy_upstream_errors_total");
        assert_eq!(errors.len(), 3, "{metrics}");
        assert_eq!(
            errors
                .iter()
                .filter(|(labels, _)| labels.contains(r#"revision="c""#))
                .map(|(_, n)| n)
                .sum::<f64>(),
            10.0,
            "{metrics}"
        );
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn proxy_answers_503_before_any_backend_and_refuses_bad_weights() {
    timeout(TEST_TIMEOUT, async {
        let proxy = WeightedProxy::bind(any_port(), any_port(), "shop".into())
            .await
            .expect("bind proxy");
        let asked = std::time::Instant::now();
        let got = get(&client(), &format!("http://{}/", proxy.local_addr())).await;
        assert_eq!(got.status, 503);
        // It waited for a backend first.
        assert!(asked.elapsed() >= vigil::platform::local::proxy::HOLD_UNTIL_READY);
        let stable = Backend {
            revision: "s".into(),
            addrs: vec![],
        };
        let err = proxy
            .set_backends(stable.clone(), None, 101)
            .expect_err("weight 101");
        assert!(matches!(err, ProxyError::SetBackendsWeight { weight: 101 }));
        let err = proxy
            .set_backends(stable, None, 10)
            .expect_err("weight without canary");
        assert!(err.to_string().contains("no canary backend"), "{err}");
        // Refused changes leave the routing as it was.
        assert_eq!(proxy.current().stable, None);
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_waits_for_a_ready_replica_instead_of_failing() {
    timeout(TEST_TIMEOUT, async {
        let app = demo_app("v1", 0.0).await;
        let proxy = WeightedProxy::bind(any_port(), any_port(), "shop".into())
            .await
            .expect("bind proxy");
        let url = format!("http://{}/", proxy.local_addr());
        // The stable revision exists but none of its processes is ready yet.
        proxy
            .set_backends(
                Backend {
                    revision: "s".into(),
                    addrs: vec![],
                },
                None,
                0,
            )
            .expect("set backends");
        let client = client();
        let waiting = tokio::spawn(async move { get(&client, &url).await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !waiting.is_finished(),
            "answered before any replica was ready"
        );
        proxy
            .set_backends(
                Backend {
                    revision: "s".into(),
                    addrs: vec![app.local_addr()],
                },
                None,
                0,
            )
            .expect("set backends");
        let got = waiting.await.expect("request task");
        assert_eq!((got.status, got.revision.as_deref()), (200, Some("s")));
        let metrics = proxy.handle().encode_metrics();
        let requests = samples(&metrics, "http_requests_total");
        assert_eq!(requests.len(), 1, "no error was recorded: {metrics}");
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn proxy_on_a_port_in_use_names_the_address() {
    let taken = tokio::net::TcpListener::bind(LOOPBACK_ANY)
        .await
        .expect("bind");
    let addr = taken.local_addr().expect("local addr");
    let err = WeightedProxy::bind(addr, any_port(), "shop".into())
        .await
        .expect_err("port in use");
    assert!(matches!(err, ProxyError::BindProxy { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains(&addr.to_string()), "{message}");
    assert!(message.contains("bind the proxy"), "{message}");

    let err = WeightedProxy::bind(any_port(), addr, "shop".into())
        .await
        .expect_err("metrics port in use");
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
}

// ---------------------------------------------------------------- supervisor

use vigil::platform::local::supervisor::{
    ProcessSpec, RevisionStatus, Supervisor, SupervisorConfig, SupervisorError,
};

const VIGIL: &str = env!("CARGO_BIN_EXE_vigil");

fn demo_app_spec(version: &str) -> ProcessSpec {
    ProcessSpec {
        command: vec![VIGIL.to_owned(), "demo-app".to_owned()],
        args: [
            "--latency-ms",
            "0",
            "--latency-jitter-ms",
            "0",
            "--version",
            version,
        ]
        .map(str::to_owned)
        .to_vec(),
        env: vec![("RUST_LOG".to_owned(), "warn".to_owned())],
        readiness_path: Some("/healthz".to_owned()),
    }
}

fn fast_config() -> SupervisorConfig {
    SupervisorConfig {
        grace_period: Duration::from_secs(3),
        backoff_initial: Duration::from_millis(50),
        backoff_max: Duration::from_millis(500),
        ..SupervisorConfig::default()
    }
}

/// Alive means it exists and is not a zombie (a killed orphan may wait for init to reap it).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

async fn wait_until(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let started = std::time::Instant::now();
    while !check() {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn pids(status: &RevisionStatus) -> Vec<u32> {
    status.replicas.iter().filter_map(|r| r.pid).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervisor_runs_restarts_scales_and_stops_the_real_demo_app() {
    timeout(TEST_TIMEOUT, async {
        let supervisor = Supervisor::new(fast_config());
        supervisor
            .start_revision("v1", demo_app_spec("v1"), 3)
            .await
            .expect("start");
        let status = supervisor
            .wait_ready("v1", Duration::from_secs(20))
            .await
            .expect("ready");
        assert_eq!((status.desired, status.running, status.ready), (3, 3, 3));
        assert_eq!(status.addrs.len(), 3);
        let client = client();
        for addr in &status.addrs {
            let got = get(&client, &format!("http://{addr}/")).await;
            assert_eq!((got.status, got.body.as_str()), (200, "hello from v1\n"));
        }

        // A killed replica comes back, on a new process, and is counted as a restart.
        let victim = status.replicas[1].pid.expect("pid");
        let pid = rustix::process::Pid::from_raw(i32::try_from(victim).expect("pid fits"))
            .expect("nonzero pid");
        rustix::process::kill_process(pid, rustix::process::Signal::KILL).expect("kill");
        wait_until("the restart", Duration::from_secs(20), || {
            let s = &supervisor.status()["v1"];
            s.restarts == 1 && s.ready == 3
        })
        .await;
        let status = supervisor.status()["v1"].clone();
        assert!(!pids(&status).contains(&victim));
        assert!(
            status.replicas[1]
                .last_error
                .as_deref()
                .is_some_and(|e| e.contains("signal: 9")),
            "{status:?}"
        );

        // Scale down to 1, then to 0: the removed processes are gone when it returns.
        let before = pids(&status);
        supervisor
            .scale_revision("v1", 1)
            .await
            .expect("scale to 1");
        let s = supervisor.status()["v1"].clone();
        assert_eq!((s.desired, s.running), (1, 1));
        assert!(before[1..].iter().all(|&pid| !alive(pid)));
        supervisor
            .scale_revision("v1", 0)
            .await
            .expect("scale to 0");
        let s = supervisor.status()["v1"].clone();
        assert_eq!((s.desired, s.running, s.ready), (0, 0, 0));
        assert!(s.addrs.is_empty());
        assert!(before.iter().all(|&pid| !alive(pid)));

        // And back up.
        supervisor
            .scale_revision("v1", 2)
            .await
            .expect("scale to 2");
        supervisor
            .wait_ready("v1", Duration::from_secs(20))
            .await
            .expect("ready again");
        let last = pids(&supervisor.status()["v1"]);
        supervisor.shutdown().await;
        assert!(supervisor.status().is_empty());
        assert!(last.iter().all(|&pid| !alive(pid)), "{last:?}");
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_counts_as_available_only_after_min_ready_seconds_of_readiness() {
    timeout(TEST_TIMEOUT, async {
        let supervisor = Supervisor::new(fast_config());
        supervisor
            .start_revision("v1", demo_app_spec("v1"), 1)
            .await
            .expect("start");
        let status = supervisor
            .wait_ready("v1", Duration::from_secs(20))
            .await
            .expect("ready");
        let first_since = status.replicas[0].ready_since.expect("ready since");
        let long = Duration::from_secs(30);
        // Ready and routed (it has an address), but not available for a long minReadySeconds
        // yet; without one it is at once.
        let now = std::time::Instant::now();
        assert_eq!(status.addrs.len(), 1);
        assert_eq!(status.available(long, now), 0);
        assert_eq!(status.available(Duration::ZERO, now), 1);
        wait_until("available after 1 s", Duration::from_secs(20), || {
            supervisor.status()["v1"].available(Duration::from_secs(1), std::time::Instant::now())
                == 1
        })
        .await;

        // A restart breaks the readiness: the clock starts again from the new process' probe.
        let victim = status.replicas[0].pid.expect("pid");
        let pid = rustix::process::Pid::from_raw(i32::try_from(victim).expect("pid fits"))
            .expect("nonzero pid");
        rustix::process::kill_process(pid, rustix::process::Signal::KILL).expect("kill");
        wait_until("the restart", Duration::from_secs(20), || {
            let s = &supervisor.status()["v1"];
            s.restarts == 1 && s.ready == 1
        })
        .await;
        let restarted = supervisor.status()["v1"].clone();
        let since = restarted.replicas[0].ready_since.expect("ready since");
        assert!(since > first_since);
        assert_eq!(restarted.available(long, std::time::Instant::now()), 0);
        supervisor.shutdown().await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervisor_names_a_missing_command_and_keeps_working() {
    timeout(TEST_TIMEOUT, async {
        let supervisor = Supervisor::new(fast_config());
        let spec = ProcessSpec {
            command: vec!["vigil-no-such-command-xyz".to_owned()],
            ..ProcessSpec::default()
        };
        let err = supervisor
            .start_revision("bad", spec, 2)
            .await
            .expect_err("missing command");
        assert!(
            matches!(err, SupervisorError::SpawnProcess { .. }),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(message.contains("vigil-no-such-command-xyz"), "{message}");
        assert!(message.contains("revision bad"), "{message}");

        let status = supervisor.status()["bad"].clone();
        assert_eq!((status.desired, status.running, status.ready), (2, 0, 0));
        assert!(
            status
                .last_error
                .as_deref()
                .is_some_and(|e| e.contains("vigil-no-such-command-xyz"))
        );
        let err = supervisor
            .wait_ready("bad", Duration::from_millis(200))
            .await
            .expect_err("never ready");
        assert!(err.to_string().contains("0/2 ready"), "{err}");

        // The supervisor still runs other revisions, and stops the broken one.
        supervisor
            .start_revision("good", demo_app_spec("v2"), 1)
            .await
            .expect("start good");
        supervisor
            .wait_ready("good", Duration::from_secs(20))
            .await
            .expect("good ready");
        supervisor.stop_revision("bad").await.expect("stop bad");
        assert!(matches!(
            supervisor.scale_revision("bad", 1).await,
            Err(SupervisorError::UnknownRevision { .. })
        ));
        supervisor.shutdown().await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervisor_kills_the_whole_group_and_escalates_to_sigkill() {
    timeout(TEST_TIMEOUT, async {
        let dir = tempfile::tempdir().expect("temp dir");
        let grandchild_file = dir.path().join("grandchild.pid");
        let supervisor = Supervisor::new(SupervisorConfig {
            grace_period: Duration::from_millis(300),
            ..fast_config()
        });
        // A shell that ignores SIGTERM and leaves a grandchild behind: only SIGKILL to the
        // process group takes both down.
        let script = format!(
            "trap '' TERM; sleep 300 & echo $! > {}; while true; do sleep 0.1; done",
            grandchild_file.display()
        );
        supervisor
            .start_revision(
                "stubborn",
                ProcessSpec {
                    command: vec!["sh".to_owned(), "-c".to_owned(), script],
                    ..ProcessSpec::default()
                },
                1,
            )
            .await
            .expect("start");
        wait_until("the grandchild", Duration::from_secs(10), || {
            std::fs::read_to_string(&grandchild_file).is_ok_and(|s| s.trim().parse::<u32>().is_ok())
        })
        .await;
        let grandchild: u32 = std::fs::read_to_string(&grandchild_file)
            .expect("read pid")
            .trim()
            .parse()
            .expect("pid");
        // The status records the pid a moment after the script runs: wait for it (busy CI).
        wait_until(
            "the child's pid in the status",
            Duration::from_secs(10),
            || !pids(&supervisor.status()["stubborn"]).is_empty(),
        )
        .await;
        let child = pids(&supervisor.status()["stubborn"])[0];
        assert!(alive(child) && alive(grandchild));

        let started = std::time::Instant::now();
        supervisor.shutdown().await;
        // It took the grace period (SIGTERM was ignored), then SIGKILL ended it.
        assert!(
            started.elapsed() >= Duration::from_millis(300),
            "{:?}",
            started.elapsed()
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert!(!alive(child), "child {child} survived");
        wait_until("the grandchild's death", Duration::from_secs(5), || {
            !alive(grandchild)
        })
        .await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_supervisor_kills_its_children() {
    timeout(TEST_TIMEOUT, async {
        let supervisor = Supervisor::new(fast_config());
        supervisor
            .start_revision("v1", demo_app_spec("v1"), 2)
            .await
            .expect("start");
        let status = supervisor
            .wait_ready("v1", Duration::from_secs(20))
            .await
            .expect("ready");
        let children = pids(&status);
        assert_eq!(children.len(), 2);
        drop(supervisor);
        wait_until("the children's death", Duration::from_secs(5), || {
            children.iter().all(|&pid| !alive(pid))
        })
        .await;
    })
    .await
    .expect("test timed out");
}

// ---------------------------------------------------------------- load generator

use vigil::platform::local::loadgen::{LoadConfig, run_load};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadgen_drives_the_proxy_at_the_asked_rate() {
    timeout(TEST_TIMEOUT, async {
        let stable_app = demo_app("v1", 0.0).await;
        let canary_app = demo_app("v2", 0.1).await;
        let proxy = WeightedProxy::bind(any_port(), any_port(), "shop".into())
            .await
            .expect("bind proxy");
        proxy
            .set_backends(
                Backend {
                    revision: "s".into(),
                    addrs: vec![stable_app.local_addr()],
                },
                Some(Backend {
                    revision: "c".into(),
                    addrs: vec![canary_app.local_addr()],
                }),
                50,
            )
            .expect("set backends");
        let target = url::Url::parse(&format!("http://{}/", proxy.local_addr())).expect("url");
        let started = std::time::Instant::now();
        let stats = run_load(
            LoadConfig::new(target.clone(), 400.0, Duration::from_millis(500)),
            std::future::pending(),
        )
        .await
        .expect("load");
        // Open loop at 400/s for 0.5 s: exactly 200 due, none skipped, in about 0.5 s.
        assert_eq!(stats.sent + stats.skipped, 200, "{stats:?}");
        assert_eq!(stats.skipped, 0, "{stats:?}");
        assert_eq!(stats.transport_errors + stats.timeouts, 0, "{stats:?}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        // Half went to the canary, which fails exactly 10% of them.
        assert_eq!(stats.by_code.get(&500), Some(&10), "{stats:?}");
        assert_eq!(stats.by_code.get(&200), Some(&190), "{stats:?}");
        assert!(stats.latency_p50.is_some() && stats.latency_p99 >= stats.latency_p50);
        let requests = samples(&proxy.handle().encode_metrics(), "http_requests_total");
        assert_eq!(requests.values().sum::<f64>(), 200.0, "{requests:?}");

        // Cancellation ends a long run early.
        let started = std::time::Instant::now();
        let stats = run_load(
            LoadConfig::new(target, 100.0, Duration::from_secs(600)),
            tokio::time::sleep(Duration::from_millis(300)),
        )
        .await
        .expect("load");
        assert!(stats.cancelled);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert!((20..=40).contains(&stats.sent), "{stats:?}");
    })
    .await
    .expect("test timed out");
}

// ---- Connection limits (issue 9, item 12) ----

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vigil::platform::local::ConnectionLimits;

/// Small enough that a test sees a slowloris client cut off and an idle slot freed quickly.
const SMALL_LIMITS: ConnectionLimits = ConnectionLimits {
    header_read_timeout: Duration::from_millis(300),
    max_connections: 4,
    write_stall_timeout: Duration::from_millis(300),
    request_timeout: Duration::from_secs(1),
    // Long: the tests below must pass through the stall and request timers, not this backstop.
    max_connection_lifetime: Duration::from_secs(600),
};

/// Reads until the server closes the connection (EOF or reset); `None` if it stays open past
/// `deadline`.
async fn read_until_closed(stream: &mut tokio::net::TcpStream, deadline: Duration) -> Option<()> {
    let mut buffer = [0u8; 1024];
    timeout(deadline, async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await
    .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_half_header_connection_is_disconnected() {
    timeout(TEST_TIMEOUT, async {
        let proxy =
            WeightedProxy::bind_with_limits(any_port(), any_port(), "shop".into(), SMALL_LIMITS)
                .await
                .expect("bind proxy");
        for addr in [proxy.local_addr(), proxy.metrics_addr()] {
            let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
            stream
                .write_all(b"GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
                .await
                .expect("write half a header");
            // Generous: the limit is 300 ms; without a header-read timer this never happens.
            assert!(
                read_until_closed(&mut stream, Duration::from_secs(20))
                    .await
                    .is_some(),
                "{addr}: a client that sent half a header and then nothing is still connected"
            );
        }
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connection_is_closed() {
    timeout(TEST_TIMEOUT, async {
        let proxy =
            WeightedProxy::bind_with_limits(any_port(), any_port(), "shop".into(), SMALL_LIMITS)
                .await
                .expect("bind proxy");
        let mut stream = tokio::net::TcpStream::connect(proxy.metrics_addr())
            .await
            .expect("connect");
        stream
            .write_all(b"GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .await
            .expect("write request");
        let mut answer = Vec::new();
        let mut buffer = [0u8; 1024];
        while !String::from_utf8_lossy(&answer).contains("ok\n") {
            let n = stream.read(&mut buffer).await.expect("read answer");
            assert!(n > 0, "closed before answering: {answer:?}");
            answer.extend_from_slice(&buffer[..n]);
        }
        assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
        // Kept alive after the answer, then closed once idle for the header-read timeout.
        assert!(
            read_until_closed(&mut stream, Duration::from_secs(20))
                .await
                .is_some(),
            "an idle keep-alive connection is never closed"
        );
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_idle_connections_do_not_starve_a_normal_request() {
    timeout(TEST_TIMEOUT, async {
        let proxy =
            WeightedProxy::bind_with_limits(any_port(), any_port(), "shop".into(), SMALL_LIMITS)
                .await
                .expect("bind proxy");
        // Five times the connection limit, each connected and silent.
        let mut idle = Vec::new();
        for _ in 0..SMALL_LIMITS.max_connections * 5 {
            idle.push(
                tokio::net::TcpStream::connect(proxy.metrics_addr())
                    .await
                    .expect("connect an idle client"),
            );
        }
        // Served once the silent ones are cut off (each batch after the header-read timeout).
        let got = timeout(
            Duration::from_secs(40),
            get(&client(), &format!("http://{}/livez", proxy.metrics_addr())),
        )
        .await
        .expect("a normal request was starved by idle connections");
        assert_eq!(got.status, 200);
        drop(idle);
    })
    .await
    .expect("test timed out");
}

/// Connects with a small receive buffer, so the kernel's buffers fill after a few answers.
async fn connect_small_receive_buffer(addr: SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .set_recv_buffer_size(4096)
        .expect("set receive buffer");
    socket.connect(addr).await.expect("connect")
}

/// Sends `request` over and over on `stream` and never reads an answer; ends when the server
/// closes the connection (the write fails) or after `limit` requests.
fn pipeline_without_reading(
    mut stream: tokio::net::TcpStream,
    request: &'static [u8],
    limit: usize,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let batch = request.repeat(256);
        for _ in 0..limit / 256 {
            if stream.write_all(&batch).await.is_err() {
                return;
            }
        }
        // Keep the connection (and so the slot) open.
        std::future::pending::<()>().await;
    })
}

/// Issue 9 item 12, review finding 3: a client that pipelines requests and never reads the
/// answers held its slot forever (the header timer does not run while hyper waits to write).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelining_clients_that_never_read_do_not_hold_every_slot() {
    timeout(TEST_TIMEOUT, async {
        let proxy =
            WeightedProxy::bind_with_limits(any_port(), any_port(), "shop".into(), SMALL_LIMITS)
                .await
                .expect("bind proxy");
        let mut holders = Vec::new();
        for _ in 0..SMALL_LIMITS.max_connections {
            let stream = connect_small_receive_buffer(proxy.metrics_addr()).await;
            holders.push(pipeline_without_reading(
                stream,
                b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
                1 << 20,
            ));
        }
        // Let the holders take every slot and fill their buffers.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let got = timeout(
            Duration::from_secs(40),
            get(&client(), &format!("http://{}/livez", proxy.metrics_addr())),
        )
        .await
        .expect("a normal request was starved by clients that never read their answers");
        assert_eq!(got.status, 200);
        for holder in holders {
            holder.abort();
        }
    })
    .await
    .expect("test timed out");
}

/// Review finding 4: `Content-Length: 1000000`, two bytes, then silence held a proxy slot
/// forever (the header timer does not cover the body).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_request_bodies_do_not_hold_every_proxy_slot() {
    timeout(TEST_TIMEOUT, async {
        let app = demo_app("v1", 0.0).await;
        let proxy =
            WeightedProxy::bind_with_limits(any_port(), any_port(), "shop".into(), SMALL_LIMITS)
                .await
                .expect("bind proxy");
        proxy
            .set_backends(
                Backend {
                    revision: "rev-stable".into(),
                    addrs: vec![app.local_addr()],
                },
                None,
                0,
            )
            .expect("set backends");
        let mut slow = Vec::new();
        for _ in 0..SMALL_LIMITS.max_connections {
            let mut stream = tokio::net::TcpStream::connect(proxy.local_addr())
                .await
                .expect("connect");
            stream
                .write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\nab")
                .await
                .expect("write a slow body's start");
            slow.push(stream);
        }
        let got = timeout(
            Duration::from_secs(40),
            get(&client(), &format!("http://{}/", proxy.local_addr())),
        )
        .await
        .expect("a normal request was starved by slow request bodies");
        assert_eq!(got.status, 200);
        for mut stream in slow {
            assert!(
                read_until_closed(&mut stream, Duration::from_secs(20))
                    .await
                    .is_some(),
                "a slow request body still holds its connection"
            );
        }
    })
    .await
    .expect("test timed out");
}

// ---- Leftover processes (issue 9, item 13) ----

use std::os::unix::process::CommandExt as _;
use vigil::platform::local::leftovers::{
    LeftoverOutcome, ProcessRecord, RecordedProcess, end_leftover, process_start_time,
};

/// A `sleep` leading its own process group, as the supervisor starts replicas.
fn sleeper() -> std::process::Child {
    std::process::Command::new("sleep")
        .arg("600")
        .process_group(0)
        .spawn()
        .expect("start sleep")
}

fn record_of(child: &std::process::Child) -> RecordedProcess {
    RecordedProcess {
        pid: child.id(),
        start_time: process_start_time(child.id()).expect("start time of a running child"),
    }
}

/// Starts an engine (no Rollout) on a state dir whose `processes.json` holds `records`; returns
/// once its start (which ends leftovers) is done.
async fn start_engine_over(records: serde_json::Value) {
    use vigil::platform::local::engine::{Engine, EngineConfig, Sources};
    use vigil::platform::local::supervisor::SupervisorConfig;
    let dir = tempfile::tempdir().expect("temp dir");
    let state_dir = dir.path().join("state");
    std::fs::create_dir_all(&state_dir).expect("state dir");
    std::fs::write(state_dir.join("processes.json"), records.to_string()).expect("write records");
    let config = EngineConfig {
        state_dir,
        prometheus: None,
        supervisor: SupervisorConfig::default(),
        notifier: Default::default(),
        outbox: None,
        allow_link_local_egress: false,
    };
    // The engine starts its notification outbox (an HTTPS client) at once.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (engine, _task) = Engine::start(config, Sources::default())
        .await
        .expect("start engine");
    engine.shutdown().await;
}

#[test]
fn recorded_pid_1_or_below_is_never_signalled() {
    let init_start = process_start_time(1).unwrap_or(0);
    for pid in [0, 1] {
        let record = ProcessRecord::Verified(RecordedProcess {
            pid,
            start_time: if pid == 1 { init_start } else { 0 },
        });
        assert_eq!(end_leftover(record), LeftoverOutcome::Refused, "pid {pid}");
    }
    for pid in [-1, 0, 1] {
        assert_eq!(
            end_leftover(ProcessRecord::PidOnly(pid)),
            LeftoverOutcome::Unverifiable,
            "bare pid {pid}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reused_pid_with_another_start_time_is_not_signalled() {
    let mut stranger = sleeper();
    let mut stale = record_of(&stranger);
    stale.start_time += 1;
    let mut own = RecordedProcess {
        pid: std::process::id(),
        start_time: process_start_time(std::process::id()).expect("own start time"),
    };
    own.start_time += 1;
    // An old engine's bare PID of a live process is not signalled either.
    let mut bare = sleeper();
    timeout(
        TEST_TIMEOUT,
        start_engine_over(serde_json::json!([stale, own, bare.id()])),
    )
    .await
    .expect("engine start timed out");
    assert_eq!(
        stranger.try_wait().expect("check the stranger"),
        None,
        "a process that reused a recorded PID was signalled"
    );
    assert_eq!(
        bare.try_wait().expect("check"),
        None,
        "a bare PID was signalled"
    );
    let _ = stranger.kill();
    let _ = stranger.wait();
    let _ = bare.kill();
    let _ = bare.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_leftover_with_its_start_time_is_killed() {
    let mut leftover = sleeper();
    let record = record_of(&leftover);
    timeout(TEST_TIMEOUT, start_engine_over(serde_json::json!([record])))
        .await
        .expect("engine start timed out");
    let status = timeout(
        TEST_TIMEOUT,
        tokio::task::spawn_blocking(move || leftover.wait()),
    )
    .await
    .expect("the leftover was not killed")
    .expect("join")
    .expect("wait");
    use std::os::unix::process::ExitStatusExt as _;
    assert_eq!(status.signal(), Some(9), "{status:?}");
}

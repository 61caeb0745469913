//! The admin endpoint of `vigil run` against hostile callers (issue 9, items 3 and 14): a web
//! page in the user's browser, DNS rebinding, a missing token, a YAML bomb. The engine runs
//! in-process with no Rollout; requests are real HTTP on 127.0.0.1.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use tokio::time::timeout;
use vigil::platform::local::ConnectionLimits;
use vigil::platform::local::admin::{ADMIN_TOKEN_FILE, Admin, read_token};
use vigil::platform::local::engine::{Engine, EngineConfig, EngineHandle, Sources};
use vigil::platform::local::supervisor::SupervisorConfig;

const VIGIL: &str = env!("CARGO_BIN_EXE_vigil");

/// Every test body runs under this limit: a hang is a failure.
const TEST_TIMEOUT: Duration = Duration::from_secs(60);

struct Running {
    admin: Admin,
    engine: EngineHandle,
    _dir: tempfile::TempDir,
    state_dir: std::path::PathBuf,
}

impl Running {
    async fn start() -> Running {
        Self::start_with_limits(ConnectionLimits::default()).await
    }

    async fn start_with_limits(limits: ConnectionLimits) -> Running {
        let dir = tempfile::tempdir().expect("temp dir");
        let state_dir = dir.path().join("state");
        let config = EngineConfig {
            state_dir: state_dir.clone(),
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
        let addr: SocketAddr = "127.0.0.1:0".parse().expect("literal");
        let admin = Admin::bind_with_limits(addr, engine.clone(), &state_dir, limits)
            .await
            .expect("bind admin");
        Running {
            admin,
            engine,
            _dir: dir,
            state_dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin.local_addr())
    }

    fn token(&self) -> String {
        read_token(&self.state_dir).expect("read token")
    }

    async fn stop(self) {
        self.admin.shutdown().await;
        self.engine.shutdown().await;
    }
}

fn client() -> reqwest::Client {
    // reqwest is built without a default TLS provider (main installs one).
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

async fn status_of(request: reqwest::RequestBuilder) -> (u16, String) {
    let response = request
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .expect("send");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_without_token_is_unauthorized() {
    timeout(TEST_TIMEOUT, async {
        let running = Running::start().await;
        let client = client();
        let (code, body) = status_of(client.get(running.url("/rollouts"))).await;
        assert_eq!(code, 401, "{body}");
        let (code, _) = status_of(
            client
                .get(running.url("/rollouts"))
                .bearer_auth("0".repeat(64)),
        )
        .await;
        assert_eq!(code, 401, "a wrong token of the right length");
        let (code, body) = status_of(
            client
                .post(running.url("/apply"))
                .header("content-type", "application/yaml")
                .body("kind: Rollout\n"),
        )
        .await;
        assert_eq!(code, 401, "{body}");
        let (code, body) = status_of(
            client
                .get(running.url("/rollouts"))
                .bearer_auth(running.token()),
        )
        .await;
        assert_eq!(code, 200, "{body}");
        running.stop().await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_page_request_with_origin_is_forbidden() {
    timeout(TEST_TIMEOUT, async {
        let running = Running::start().await;
        let (code, body) = status_of(
            client()
                .post(running.url("/apply"))
                .bearer_auth(running.token())
                .header("origin", "https://evil.example")
                .header("content-type", "application/yaml")
                .body("kind: Rollout\n"),
        )
        .await;
        assert_eq!(code, 403, "{body}");
        assert!(body.contains("Origin"), "{body}");
        running.stop().await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_rebinding_host_is_forbidden() {
    timeout(TEST_TIMEOUT, async {
        let running = Running::start().await;
        let client = client();
        for host in ["evil.example", "evil.example:9901", "10.0.0.1:9901"] {
            let (code, body) = status_of(
                client
                    .get(running.url("/rollouts"))
                    .bearer_auth(running.token())
                    .header("host", host),
            )
            .await;
            assert_eq!(code, 403, "Host {host}: {body}");
        }
        for host in ["localhost:9901", "127.0.0.1", "[::1]:9901"] {
            let (code, body) = status_of(
                client
                    .get(running.url("/rollouts"))
                    .bearer_auth(running.token())
                    .header("host", host),
            )
            .await;
            assert_eq!(code, 200, "Host {host}: {body}");
        }
        running.stop().await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_without_yaml_content_type_is_unsupported() {
    timeout(TEST_TIMEOUT, async {
        let running = Running::start().await;
        let client = client();
        // What a web form or a `fetch` without preflight sends.
        for content_type in [
            None,
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
        ] {
            let mut request = client
                .post(running.url("/apply"))
                .bearer_auth(running.token())
                .body("kind: Rollout\n");
            if let Some(content_type) = content_type {
                request = request.header("content-type", content_type);
            }
            let (code, body) = status_of(request).await;
            assert_eq!(code, 415, "{content_type:?}: {body}");
        }
        let (code, body) = status_of(
            client
                .post(running.url("/apply"))
                .bearer_auth(running.token())
                .header("content-type", "application/x-yaml; charset=utf-8")
                .body("kind: Rollout\n"),
        )
        .await;
        assert_ne!(code, 415, "{body}");
        running.stop().await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn yaml_bomb_50k_deep_is_refused_and_engine_still_answers() {
    timeout(TEST_TIMEOUT, async {
        let running = Running::start().await;
        let client = client();
        let bomb = format!(
            "apiVersion: vigil.dev/v1alpha1\nkind: Rollout\nspec: {}{}\n",
            "[".repeat(50_000),
            "]".repeat(50_000)
        );
        let (code, body) = status_of(
            client
                .post(running.url("/apply"))
                .bearer_auth(running.token())
                .header("content-type", "application/yaml")
                .body(bomb),
        )
        .await;
        assert_eq!(code, 400, "{body}");
        assert!(body.contains("nesting depth"), "{body}");
        assert!(body.contains("64"), "{body}");
        let (code, body) = status_of(
            client
                .get(running.url("/rollouts"))
                .bearer_auth(running.token()),
        )
        .await;
        assert_eq!(code, 200, "{body}");
        running.stop().await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_token_file_is_private_to_the_user() {
    timeout(TEST_TIMEOUT, async {
        let running = Running::start().await;
        let file = running.state_dir.join(ADMIN_TOKEN_FILE);
        let mode = std::fs::metadata(&file)
            .expect("token file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
        assert_eq!(running.token().len(), 64);
        running.stop().await;
        assert!(!file.exists(), "a clean stop removes the token");
    })
    .await
    .expect("test timed out");
}

#[test]
fn admin_on_a_non_loopback_address_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let rollout = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/local-demo/rollout.yaml");
    for admin in ["0.0.0.0:9901", "[::]:9901", "192.0.2.1:9901"] {
        let output = Command::new(VIGIL)
            .arg("run")
            .arg(&rollout)
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .args(["--admin", admin])
            .output()
            .expect("run vigil");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{admin}: {stderr}");
        assert!(stderr.contains("loopback"), "{admin}: {stderr}");
        assert!(
            !dir.path().join("state").exists(),
            "{admin}: refused before the engine started"
        );
    }
}

#[test]
fn vigil_local_without_a_token_says_where_it_looked() {
    let dir = tempfile::tempdir().expect("temp dir");
    let state_dir = dir.path().join("no-engine-here");
    let output = Command::new(VIGIL)
        .args([
            "local",
            "--admin",
            "127.0.0.1:9",
            "get",
            "demo",
            "--state-dir",
        ])
        .arg(&state_dir)
        .env_remove(vigil::platform::local::admin::ADMIN_TOKEN_ENV)
        .output()
        .expect("run vigil local");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("admin token"), "{stderr}");
    assert!(
        stderr.contains(&state_dir.join(ADMIN_TOKEN_FILE).display().to_string()),
        "{stderr}"
    );
    assert!(stderr.contains("--token"), "{stderr}");
}

/// Review finding 4: `POST /apply` announcing `Content-Length: 1000000`, sending two bytes and
/// then nothing held an admin slot forever (the header timer does not cover the body).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_apply_bodies_do_not_hold_every_admin_slot() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    timeout(TEST_TIMEOUT, async {
        let limits = ConnectionLimits {
            max_connections: 4,
            request_timeout: Duration::from_secs(1),
            ..ConnectionLimits::default()
        };
        let running = Running::start_with_limits(limits).await;
        let head = format!(
            "POST /apply HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/yaml\r\nContent-Length: 1000000\r\n\r\nab",
            running.token()
        );
        let mut slow = Vec::new();
        for _ in 0..limits.max_connections {
            let mut stream = tokio::net::TcpStream::connect(running.admin.local_addr())
                .await
                .expect("connect");
            stream
                .write_all(head.as_bytes())
                .await
                .expect("write a slow body's start");
            slow.push(stream);
        }
        let (code, body) = status_of(
            client()
                .get(running.url("/rollouts"))
                .bearer_auth(running.token()),
        )
        .await;
        assert_eq!(code, 200, "{body}");
        for mut stream in slow {
            let mut answer = Vec::new();
            let closed = timeout(Duration::from_secs(20), stream.read_to_end(&mut answer)).await;
            assert!(
                closed.is_ok(),
                "a slow /apply body still holds its connection"
            );
            assert!(
                String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 408"),
                "{answer:?}"
            );
        }
        running.stop().await;
    })
    .await
    .expect("test timed out");
}

/// Review finding 5: `vigil lint` (and `vigil analyze`, `vigil run`, which share
/// `manifest::documents`) handed a 1 MB flow bomb hidden behind `#c\r` to the parser, whose time
/// grows with the square of the depth. It is now refused by the nesting guard, naming the limit.
#[test]
fn lint_of_a_carriage_return_hidden_yaml_bomb_is_refused_by_the_nesting_guard() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("bomb.yaml");
    let bomb = format!("#c\r{}{}", "[".repeat(500_000), "]".repeat(500_000));
    std::fs::write(&file, bomb).expect("write bomb");
    let mut child = Command::new(VIGIL)
        .arg("lint")
        .arg(&file)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run vigil lint");
    // Generous: the guard is linear; the parser alone took minutes on this input.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("wait for vigil lint").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("vigil lint still parsing a YAML bomb after 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().expect("collect output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(text.contains("nesting depth"), "{text}");
    assert!(text.contains("limit of 64"), "{text}");
    assert!(text.contains("line 2"), "{text}");
}

/// Review finding 7: the `vigil local` client honoured HTTP_PROXY / ALL_PROXY, so the admin
/// token (and /apply bodies) went to the proxy. It must talk to the loopback admin directly.
#[test]
fn vigil_local_does_not_send_the_admin_token_through_http_proxy() {
    use std::io::{Read, Write};
    let proxy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind fake proxy");
    let admin = std::net::TcpListener::bind("127.0.0.1:0").expect("bind fake admin");
    let admin_addr = admin.local_addr().expect("admin addr");
    let proxy_url = format!("http://{}", proxy.local_addr().expect("proxy addr"));
    // The fake admin answers one request and returns what it received.
    let served = std::thread::spawn(move || {
        let (mut stream, _) = admin.accept().expect("accept");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("read timeout");
        let mut request = Vec::new();
        let mut buffer = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(n) => request.extend_from_slice(&buffer[..n]),
            }
        }
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n");
        String::from_utf8_lossy(&request).into_owned()
    });
    let mut child = Command::new(VIGIL)
        .args([
            "local",
            "--admin",
            &admin_addr.to_string(),
            "--token",
            "secret-token",
        ])
        .args(["abort", "demo"])
        .env("HTTP_PROXY", &proxy_url)
        .env("http_proxy", &proxy_url)
        .env("ALL_PROXY", &proxy_url)
        .env("all_proxy", &proxy_url)
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run vigil local");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("wait").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().expect("output");
    proxy.set_nonblocking(true).expect("nonblocking");
    assert!(
        proxy.accept().is_err(),
        "vigil local connected to the HTTP proxy (the admin token went through it)"
    );
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let request = served.join().expect("fake admin");
    assert!(
        request.starts_with("POST /rollouts/demo/abort "),
        "{request}"
    );
    assert!(request.contains("secret-token"), "{request}");
}

/// Review finding 7: `vigil local --admin` on another host would send the token there.
#[test]
fn vigil_local_refuses_a_non_loopback_admin_before_sending_the_token() {
    for admin in ["192.0.2.1:9901", "0.0.0.0:9901", "[2001:db8::1]:9901"] {
        let output = Command::new(VIGIL)
            .args([
                "local",
                "--admin",
                admin,
                "--token",
                "secret-token",
                "get",
                "demo",
            ])
            .output()
            .expect("run vigil local");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{admin}: {stderr}");
        assert!(
            stderr.contains("not a loopback address"),
            "{admin}: {stderr}"
        );
        assert!(!stderr.contains("secret-token"), "{admin}: {stderr}");
    }
}

/// Review finding 12: with two Host headers, the admin read only the first; a proxy in front
/// could read the other. Such a request is now refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_with_two_host_headers_is_forbidden() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    timeout(TEST_TIMEOUT, async {
        let running = Running::start().await;
        let mut stream = tokio::net::TcpStream::connect(running.admin.local_addr())
            .await
            .expect("connect");
        let request = format!(
            "GET /rollouts HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.example\r\n\
             Authorization: Bearer {}\r\nConnection: close\r\n\r\n",
            running.token()
        );
        stream
            .write_all(request.as_bytes())
            .await
            .expect("write request");
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
        running.stop().await;
    })
    .await
    .expect("test timed out");
}

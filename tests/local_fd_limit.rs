//! Issue 9, item 12, as reported: idle connections under a low file limit stopped the proxy
//! (accept failed with EMFILE forever, logged at every attempt, and idle connections were never
//! closed). The proxy runs in a child process (this test binary run again) whose soft
//! `RLIMIT_NOFILE` is just above what it has open, so the connections the test holds open run it
//! out of descriptors; a normal request must still be served once the idle ones are cut.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use vigil::platform::local::ConnectionLimits;
use vigil::platform::local::proxy::WeightedProxy;

const TEST_NAME: &str = "idle_connections_under_a_low_file_limit_do_not_stop_the_proxy";

/// Set in the child: serve instead of test.
const CHILD_ENV: &str = "VIGIL_TEST_FD_LIMIT_CHILD";

/// Descriptors the child may open beyond those it has when it starts serving.
const SPARE_DESCRIPTORS: u64 = 16;

/// Idle connections the test opens: many times the spare descriptors.
const IDLE_CONNECTIONS: usize = 150;

#[test]
fn idle_connections_under_a_low_file_limit_do_not_stop_the_proxy() {
    if std::env::var_os(CHILD_ENV).is_some() {
        serve_under_a_low_file_limit();
        return;
    }
    let mut child = Command::new(std::env::current_exe().expect("own path"))
        .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the child");
    let stdout = child.stdout.take().expect("child stdout");
    // The harness prints `test NAME ... ` on the same line before the child's own output.
    let (found, address) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let addr = BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|line| {
                line.split("LISTENING ")
                    .nth(1)?
                    .trim()
                    .parse::<SocketAddr>()
                    .ok()
            });
        let _ = found.send(addr);
    });
    let addr = match address.recv_timeout(Duration::from_secs(60)) {
        Ok(Some(addr)) => addr,
        other => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the child never said where it listens: {other:?}");
        }
    };

    let idle: Vec<TcpStream> = (0..IDLE_CONNECTIONS)
        .map(|_| TcpStream::connect(addr).expect("connect an idle client"))
        .collect();
    let mut normal = TcpStream::connect(addr).expect("connect");
    // Generous: idle ones are cut after 300 ms each, in waves of about SPARE_DESCRIPTORS.
    normal
        .set_read_timeout(Some(Duration::from_secs(90)))
        .expect("read timeout");
    normal
        .write_all(b"GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .expect("send a normal request");
    let mut answer = String::new();
    let read = normal.read_to_string(&mut answer);
    drop(idle);
    let _ = child.kill();
    let _ = child.wait();
    read.expect("the normal request was never answered");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// The child: a proxy with a short header-read timeout (the default connection limit, far above
/// the file limit), serving until the parent closes stdin.
fn serve_under_a_low_file_limit() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let limits = ConnectionLimits {
            header_read_timeout: Duration::from_millis(300),
            ..ConnectionLimits::default()
        };
        let any: SocketAddr = "127.0.0.1:0".parse().expect("literal");
        let proxy = WeightedProxy::bind_with_limits(any, any, "shop".into(), limits)
            .await
            .expect("bind proxy");
        let open = std::fs::read_dir("/proc/self/fd")
            .expect("list descriptors")
            .count() as u64;
        let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
        rustix::process::setrlimit(
            rustix::process::Resource::Nofile,
            rustix::process::Rlimit {
                current: Some(open + SPARE_DESCRIPTORS),
                maximum: limit.maximum,
            },
        )
        .expect("lower the file limit");
        println!("LISTENING {}", proxy.metrics_addr());
        let _ = std::io::stdout().flush();
        // Until the parent closes stdin (it exits or kills this process).
        let _ = tokio::task::spawn_blocking(|| {
            let mut byte = [0u8; 1];
            let _ = std::io::stdin().read(&mut byte);
        })
        .await;
        drop(proxy);
    });
}

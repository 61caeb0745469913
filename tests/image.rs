//! The container image: `deploy/image/build.sh` (what `make image` runs) packages a static
//! *debug* build here (the release build is `make image`'s job), and buildah runs what it
//! wrote, the OCI archive itself: a FROM-scratch image with the binary, the CA bundle and
//! nothing else, user 65532, its OCI labels, `vigil --version`, and `vigil controller`
//! against the in-process API server with a real Prometheus reached by a host name (proving
//! name resolution works in the image without glibc's NSS modules) that is the controller's
//! default Prometheus (`--prometheus`, the template names no address).
//!
//! Skipped, saying why, where buildah is not installed (`make deps` installs it).

mod support;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use support::prometheus::PrometheusServer;
use vigil::api::{AnalysisPhase, AnalysisTemplate, Rollout, RolloutPhase};
use vigil::testing::apiserver::ApiServer;

const NS: &str = "default";
const WAIT: Duration = Duration::from_secs(120);
/// The host name the container resolves to 127.0.0.1 (buildah writes it to /etc/hosts).
const PROMETHEUS_HOST: &str = "prometheus.vigil.test";

/// Whether buildah is here; prints why the test is skipped when it is not.
fn buildah_present(test: &str) -> bool {
    let present = Command::new("buildah")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !present {
        eprintln!(
            "skipped {test}: buildah is not installed (`make deps` installs Debian's package)"
        );
    }
    present
}

/// The image archive, built once per test binary from a static debug build.
fn image_archive() -> &'static Path {
    static ARCHIVE: OnceLock<PathBuf> = OnceLock::new();
    ARCHIVE.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let archive = Path::new(env!("CARGO_TARGET_TMPDIR")).join("vigil-image.tar");
        let output = Command::new(root.join("deploy/image/build.sh"))
            .args(["--debug", "--out"])
            .arg(&archive)
            .env("CARGO", env!("CARGO"))
            .current_dir(root)
            .output()
            .expect("run deploy/image/build.sh");
        assert!(
            output.status.success(),
            "deploy/image/build.sh --debug failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        archive
    })
}

/// buildah with a throw-away vfs store of its own (removed on drop).
struct Buildah {
    storage: tempfile::TempDir,
}

impl Buildah {
    fn new() -> Buildah {
        Buildah {
            storage: tempfile::Builder::new()
                .prefix("buildah-")
                .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
                .expect("storage dir"),
        }
    }

    fn command(&self) -> Command {
        let mut command = Command::new("buildah");
        command
            .args(["--storage-driver", "vfs", "--root"])
            .arg(self.storage.path().join("root"))
            .arg("--runroot")
            .arg(self.storage.path().join("run"));
        command
    }

    /// Runs buildah with `args`; its output, which must be a success.
    fn ok(&self, args: &[&str]) -> Output {
        let output = self.command().args(args).output().expect("run buildah");
        assert!(
            output.status.success(),
            "buildah {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    /// A working container from the archive (`extra`: options of `buildah from`).
    fn container(&self, extra: &[&str]) -> String {
        let source = format!("oci-archive:{}", image_archive().display());
        let mut args = vec!["from", "--quiet", "--pull=never"];
        args.extend_from_slice(extra);
        args.push(&source);
        String::from_utf8_lossy(&self.ok(&args).stdout)
            .trim()
            .to_owned()
    }
}

/// Every file under `root`, as paths relative to it.
fn files_under(root: &Path) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir").flatten() {
            let path = entry.path();
            if entry.file_type().expect("file type").is_dir() {
                pending.push(path);
            } else {
                let relative = path.strip_prefix(root).expect("under root");
                found.insert(relative.display().to_string());
            }
        }
    }
    found
}

#[test]
fn the_image_holds_only_the_static_binary_and_ca_bundle_runs_as_65532_and_is_labelled() {
    if !buildah_present("the image test") {
        return;
    }
    let buildah = Buildah::new();
    let container = buildah.container(&[]);
    let images = buildah.ok(&["images", "--format", "{{.Name}}:{{.Tag}}"]);
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        String::from_utf8_lossy(&images.stdout).trim(),
        format!("docker.io/library/vigil:{version}"),
        "the archive names the image as `image: vigil:{version}` resolves on a node"
    );

    let inspect: Value =
        serde_json::from_slice(&buildah.ok(&["inspect", &container]).stdout).expect("json");
    let config = &inspect["OCIv1"]["config"];
    assert_eq!(config["User"], "65532:65532");
    assert_eq!(config["Entrypoint"], json!(["/vigil"]));
    assert_eq!(config["Cmd"], json!(["controller"]));
    let labels = &config["Labels"];
    assert_eq!(labels["org.opencontainers.image.version"], version);
    let head = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    if let Some(head) = head {
        assert_eq!(labels["org.opencontainers.image.revision"], head.as_str());
    }
    assert!(
        labels["org.opencontainers.image.source"]
            .as_str()
            .is_some_and(|s| !s.is_empty()),
        "{labels}"
    );

    let mounted = buildah.ok(&["mount", &container]);
    let root = PathBuf::from(String::from_utf8_lossy(&mounted.stdout).trim());
    assert_eq!(
        files_under(&root),
        BTreeSet::from([
            "etc/ssl/certs/ca-certificates.crt".to_owned(),
            "vigil".to_owned()
        ]),
        "FROM scratch: no shell, no loader, no libraries"
    );

    let run = buildah.ok(&[
        "run",
        "--isolation",
        "chroot",
        &container,
        "--",
        "/vigil",
        "--version",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&run.stdout).trim(),
        format!("vigil {version}")
    );
    let shell = buildah
        .command()
        .args([
            "run",
            "--isolation",
            "chroot",
            &container,
            "--",
            "/bin/sh",
            "-c",
            "true",
        ])
        .output()
        .expect("run buildah");
    assert!(!shell.status.success(), "the image has no shell");
}

/// Serves the fixed metrics text on 127.0.0.1 until the process exits.
fn start_exporter(body: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind exporter");
    let addr = listener.local_addr().expect("addr").to_string();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes());
        }
    });
    addr
}

/// `vigil controller` running in the image under `buildah run`: SIGTERM on drop (buildah
/// passes it on), then SIGKILL to the whole process group.
struct ImageController {
    child: Child,
    log: PathBuf,
}

impl ImageController {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ImageController {
    fn drop(&mut self) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32);
        if let Some(pid) = pid {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if let Some(pid) = pid {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
        let _ = self.child.wait();
    }
}

fn rollout(name: &str, image: &str) -> Rollout {
    serde_json::from_value(json!({
        "apiVersion": "vigil.dev/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": name}},
            "template": pod_template(name, image),
            "strategy": {"canary": {
                "stableService": format!("{name}-stable"),
                "canaryService": format!("{name}-canary"),
                "steps": [
                    {"setWeight": 50},
                    {"analysis": {"templates": [{"templateName": "error-ratio"}]}},
                    {"setWeight": 100}
                ]
            }}
        }
    }))
    .expect("rollout")
}

fn pod_template(name: &str, image: &str) -> Value {
    json!({
        "metadata": {"labels": {"app": name}},
        "spec": {"containers": [{"name": "app", "image": image}]}
    })
}

/// The template names no address: the controller's `--prometheus` applies.
fn template() -> AnalysisTemplate {
    serde_json::from_value(json!({
        "apiVersion": "vigil.dev/v1alpha1",
        "kind": "AnalysisTemplate",
        "metadata": {"name": "error-ratio", "namespace": NS},
        "spec": {
            "args": [{"name": "rollout"}],
            "metrics": [{
                "name": "error-ratio",
                "interval": "1s",
                "count": 2,
                "failureLimit": 0,
                "successCondition": "result < 0.05",
                "provider": {"prometheus": {
                    "query": "max(image_error_ratio{rollout=\"{{args.rollout}}\"})"
                }}
            }]
        }
    }))
    .expect("template")
}

async fn wait_for(
    api: &Api<Rollout>,
    what: &str,
    controller: &ImageController,
    check: impl Fn(&Rollout) -> bool,
) -> Rollout {
    let deadline = Instant::now() + WAIT;
    loop {
        let rollout = api.get("web").await.expect("get rollout");
        if check(&rollout) {
            return rollout;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; status: {:#?}\ncontroller log:\n{}",
            rollout.status,
            controller.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn prometheus_has_data(prometheus: &PrometheusServer) {
    let url = format!(
        "{}api/v1/query?query=count(image_error_ratio)",
        prometheus.url()
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let http = reqwest::Client::new();
    loop {
        if let Ok(response) = http.get(&url).send().await
            && let Ok(body) = response.json::<Value>().await
            && body["data"]["result"][0]["value"][1] == "1"
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never scraped the exporter: {:?}",
            prometheus.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Starts the image's `vigil controller` with `config_dir` (holding `kubeconfig`) mounted at
/// /config and `prometheus_port` reached as [`PROMETHEUS_HOST`].
fn start_controller_in_image(
    buildah: &Buildah,
    config_dir: &Path,
    prometheus_port: u16,
) -> ImageController {
    use std::os::unix::process::CommandExt as _;
    let container = buildah.container(&["--add-host", &format!("{PROMETHEUS_HOST}:127.0.0.1")]);
    let log = config_dir.join("controller.log");
    let log_file = std::fs::File::create(&log).expect("log file");
    let default_prometheus = format!("http://{PROMETHEUS_HOST}:{prometheus_port}");
    let child = buildah
        .command()
        .args(["run", "--isolation", "chroot", "--volume"])
        .arg(format!("{}:/config:ro", config_dir.display()))
        .args(["--env", "KUBECONFIG=/config/kubeconfig"])
        .args(["--env", &format!("VIGIL_PROMETHEUS={default_prometheus}")])
        .args(["--env", "RUST_LOG=info,kube=warn"])
        .args([
            &container,
            "--",
            "/vigil",
            "controller",
            "--no-leader-election",
        ])
        .args(["--metrics-addr", "127.0.0.1:0", "--concurrency", "2"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file)
        .process_group(0)
        .spawn()
        .expect("start the controller in the image");
    ImageController { child, log }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_runs_the_controller_which_reaches_its_default_prometheus_by_host_name() {
    if !buildah_present("the image controller test") {
        return;
    }
    support::install_crypto_provider();
    let buildah = Buildah::new();
    image_archive();
    let exporter = start_exporter(
        "# TYPE image_error_ratio gauge\nimage_error_ratio{rollout=\"web\"} 0.001\n",
    );
    let prometheus = PrometheusServer::start_with_config(&format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
         scrape_configs:\n  - job_name: image\n    static_configs:\n      - targets: ['{exporter}']\n"
    ));
    let port = prometheus.url().port().expect("Prometheus port");
    let server = ApiServer::start().with_replicaset_controller();
    // User 65532 reads the kubeconfig through the mount.
    let config_dir = tempfile::tempdir().expect("config dir");
    std::fs::set_permissions(
        config_dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    server
        .write_kubeconfig(&config_dir.path().join("kubeconfig"))
        .expect("kubeconfig");
    let client = server.client();
    let services: Api<Service> = Api::namespaced(client.clone(), NS);
    for role in ["stable", "canary"] {
        let service: Service = serde_json::from_value(json!({
            "metadata": {"name": format!("web-{role}"), "namespace": NS},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}
        }))
        .expect("service");
        services
            .create(&PostParams::default(), &service)
            .await
            .expect("create service");
    }
    Api::<AnalysisTemplate>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &template())
        .await
        .expect("create template");
    let rollouts: Api<Rollout> = Api::namespaced(client.clone(), NS);
    rollouts
        .create(&PostParams::default(), &rollout("web", "app:1"))
        .await
        .expect("create rollout");
    prometheus_has_data(&prometheus).await;

    let controller = start_controller_in_image(&buildah, config_dir.path(), port);
    wait_for(&rollouts, "app:1 Healthy", &controller, |r| {
        r.status.as_ref().and_then(|s| s.phase) == Some(RolloutPhase::Healthy)
    })
    .await;
    rollouts
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"template": pod_template("web", "app:2")}})),
        )
        .await
        .expect("new image");
    let v2_template = rollout("web", "app:2")
        .spec
        .template
        .expect("an inline template");
    let v2 = vigil::rollout::template_hash(&v2_template);
    let promoted = wait_for(
        &rollouts,
        "app:2 promoted through its analysis",
        &controller,
        |r| {
            r.status.as_ref().is_some_and(|s| {
                s.phase == Some(RolloutPhase::Healthy)
                    && s.stable_revision.as_deref() == Some(v2.as_str())
            })
        },
    )
    .await;
    let analysis = promoted
        .status
        .and_then(|s| s.step_analysis)
        .expect("the step analysis is shown");
    assert_eq!(
        analysis.phase,
        AnalysisPhase::Successful,
        "{analysis:?}\ncontroller log:\n{}",
        controller.log()
    );
}

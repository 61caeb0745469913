//! `vigil migrate deployment`: the real binary reads a Deployment and the Services around it
//! from the in-process Kubernetes API test server and prints the Rollout that adopts it, which
//! `vigil lint` accepts.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, PostParams};
use serde_json::json;
use vigil::api::{Rollout, ScaleDown};
use vigil::testing::apiserver::ApiServer;

const NS: &str = "shop";

fn vigil(kubeconfig: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("RUST_LOG", "error")
        .output()
        .expect("run vigil")
}

async fn create(client: &kube::Client) {
    let deployment: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "checkout", "namespace": NS},
        "spec": {
            "replicas": 6,
            "selector": {"matchLabels": {"app": "checkout"}},
            "template": {
                "metadata": {"labels": {"app": "checkout", "team": "payments"}},
                "spec": {"containers": [{"name": "checkout", "image": "checkout:41"}]}
            }
        }
    }))
    .expect("deployment");
    Api::<Deployment>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &deployment)
        .await
        .expect("create deployment");
    for (name, selector) in [
        ("checkout", json!({"app": "checkout"})),
        ("cart", json!({"app": "cart"})),
    ] {
        let service: Service = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": NS},
            "spec": {"selector": selector, "ports": [{"port": 80}]}
        }))
        .expect("service");
        Api::<Service>::namespaced(client.clone(), NS)
            .create(&PostParams::default(), &service)
            .await
            .expect("create service");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_prints_the_rollout_that_adopts_a_deployment_and_it_lints_clean() {
    support::install_crypto_provider();
    let server = ApiServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    create(&server.client()).await;

    let output = vigil(
        &kubeconfig,
        &["migrate", "deployment", "checkout", "-n", NS],
    );
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rollout: Rollout = serde_norway::from_str(&stdout).expect("a Rollout");
    assert_eq!(rollout.metadata.name.as_deref(), Some("checkout"));
    assert_eq!(rollout.metadata.namespace.as_deref(), Some(NS));
    assert_eq!(rollout.spec.replicas, Some(6));
    assert_eq!(
        serde_json::to_value(&rollout.spec.selector).expect("selector"),
        json!({"matchLabels": {"app": "checkout"}})
    );
    let workload = rollout.spec.workload_ref.expect("workloadRef");
    assert_eq!(workload.name, "checkout");
    assert_eq!(workload.scale_down, Some(ScaleDown::Progressively));
    assert!(rollout.spec.template.is_none());
    let canary = rollout.spec.strategy.canary;
    assert_eq!(
        canary.stable_service.as_deref(),
        Some("checkout"),
        "derived from the Service selecting the pods, not `cart`"
    );
    assert!(!canary.steps.is_empty());
    assert!(stdout.contains("# TODO canaryService"), "{stdout}");

    let file = dir.path().join("rollout.yaml");
    std::fs::write(&file, &stdout).expect("write");
    let lint = vigil(&kubeconfig, &["lint", file.to_str().expect("path")]);
    assert!(
        lint.status.success(),
        "vigil lint: {}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );

    let missing = vigil(&kubeconfig, &["migrate", "deployment", "nope", "-n", NS]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(missing.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(
        stderr.contains("Deployment nope does not exist in namespace shop"),
        "{stderr}"
    );
}

//! `deploy/` renders with `kubectl kustomize`, its RBAC names every verb and resource (no
//! wildcards) and grants what the controller needs, the Deployment is hardened, and the
//! example Rollout is valid and routable.

use std::process::Command;

use serde_json::Value;

fn documents(yaml: &str) -> Vec<Value> {
    yaml.split("\n---")
        .filter(|doc| !doc.trim().is_empty())
        .map(|doc| serde_norway::from_str::<Value>(doc).expect("YAML document"))
        .filter(|doc| !doc.is_null())
        .collect()
}

fn kustomize() -> Vec<Value> {
    let output = Command::new("kubectl")
        .args(["kustomize", concat!(env!("CARGO_MANIFEST_DIR"), "/deploy")])
        .output()
        .unwrap_or_else(|e| {
            panic!("kubectl is needed to render deploy/ (install kubectl; /usr/bin/kubectl): {e}")
        });
    assert!(
        output.status.success(),
        "kubectl kustomize deploy/ failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    documents(&String::from_utf8_lossy(&output.stdout))
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn grants(rules: &[Value], group: &str, resource: &str, verb: &str) -> bool {
    rules.iter().any(|rule| {
        strings(&rule["apiGroups"]).iter().any(|g| g == group)
            && strings(&rule["resources"]).iter().any(|r| r == resource)
            && strings(&rule["verbs"]).iter().any(|v| v == verb)
    })
}

#[test]
fn rbac_is_least_privilege_without_wildcards() {
    let docs = kustomize();
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    for kind in [
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "NetworkPolicy",
    ] {
        assert!(
            kinds.contains(&kind),
            "deploy/ renders no {kind}: {kinds:?}"
        );
    }
    for role in docs
        .iter()
        .filter(|d| matches!(d["kind"].as_str(), Some("ClusterRole" | "Role")))
    {
        let name = role["metadata"]["name"].as_str().unwrap_or("?");
        for rule in role["rules"].as_array().expect("rules") {
            for field in ["apiGroups", "resources", "verbs", "resourceNames"] {
                assert!(
                    !strings(&rule[field]).iter().any(|s| s.contains('*')),
                    "{name}: wildcard in {field}: {rule}"
                );
            }
        }
    }
    let cluster_role = docs
        .iter()
        .find(|d| d["kind"] == "ClusterRole")
        .expect("ClusterRole");
    let rules = cluster_role["rules"].as_array().expect("rules").clone();
    for (group, resource, verb) in [
        ("vigil.dev", "rollouts", "watch"),
        ("vigil.dev", "rollouts/status", "patch"),
        ("vigil.dev", "rollouts/finalizers", "update"),
        ("vigil.dev", "analysisruns", "create"),
        // Finished runs beyond spec.analysis's history limits.
        ("vigil.dev", "analysisruns", "delete"),
        ("vigil.dev", "analysisruns/status", "patch"),
        ("vigil.dev", "analysistemplates", "get"),
        ("vigil.dev", "clusteranalysistemplates", "get"),
        ("apps", "replicasets", "create"),
        ("apps", "replicasets", "patch"),
        // spec.workloadRef: read, watched, scaled down by a patch of spec.replicas.
        ("apps", "deployments", "get"),
        ("apps", "deployments", "list"),
        ("apps", "deployments", "watch"),
        ("apps", "deployments", "patch"),
        ("", "services", "patch"),
        // Read from the controller's caches: watched.
        ("", "services", "list"),
        ("", "services", "watch"),
        ("gateway.networking.k8s.io", "httproutes", "watch"),
        ("networking.istio.io", "virtualservices", "watch"),
        ("networking.istio.io", "destinationrules", "watch"),
        ("networking.k8s.io", "ingresses", "watch"),
        ("split.smi-spec.io", "trafficsplits", "watch"),
        ("traefik.io", "traefikservices", "watch"),
        ("", "secrets", "get"),
        ("gateway.networking.k8s.io", "httproutes", "patch"),
        ("networking.istio.io", "virtualservices", "get"),
        ("networking.istio.io", "virtualservices", "patch"),
        ("networking.istio.io", "destinationrules", "get"),
        ("networking.istio.io", "destinationrules", "patch"),
        ("networking.k8s.io", "ingresses", "get"),
        ("networking.k8s.io", "ingresses", "create"),
        ("networking.k8s.io", "ingresses", "patch"),
        ("networking.k8s.io", "ingresses", "delete"),
        ("split.smi-spec.io", "trafficsplits", "get"),
        ("split.smi-spec.io", "trafficsplits", "create"),
        ("split.smi-spec.io", "trafficsplits", "patch"),
        // Job metrics: Jobs created, followed and deleted; the namespace opt-in label read;
        // the last lines of the Job's pod's log read.
        ("batch", "jobs", "create"),
        ("batch", "jobs", "get"),
        ("batch", "jobs", "list"),
        ("batch", "jobs", "watch"),
        ("batch", "jobs", "delete"),
        ("", "namespaces", "get"),
        ("", "pods", "list"),
        ("", "pods/log", "get"),
        ("traefik.io", "traefikservices", "get"),
        ("traefik.io", "traefikservices", "patch"),
        ("events.k8s.io", "events", "create"),
        ("apiextensions.k8s.io", "customresourcedefinitions", "get"),
        ("apiextensions.k8s.io", "customresourcedefinitions", "list"),
        ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
    ] {
        assert!(
            grants(&rules, group, resource, verb),
            "missing {verb} on {group}/{resource}"
        );
    }
    for verb in ["list", "watch", "create", "update", "patch", "delete"] {
        assert!(
            !grants(&rules, "", "secrets", verb),
            "secrets may only be read by name (get), never {verb}"
        );
    }
    for verb in ["create", "update", "delete"] {
        assert!(
            !grants(&rules, "apps", "deployments", verb),
            "an adopted Deployment is only ever patched (its replicas), never {verb}d"
        );
    }
    assert!(
        !grants(&rules, "apps", "deployments/scale", "patch"),
        "vigil patches spec.replicas of the Deployment, not its scale subresource"
    );
    let role = docs.iter().find(|d| d["kind"] == "Role").expect("Role");
    assert_eq!(role["metadata"]["namespace"], "vigil-system");
    assert!(grants(
        role["rules"].as_array().expect("rules"),
        "coordination.k8s.io",
        "leases",
        "patch"
    ));
}

#[test]
fn the_deployment_is_hardened_and_probed() {
    let docs = kustomize();
    let deployment = docs
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .expect("Deployment");
    assert_eq!(deployment["metadata"]["namespace"], "vigil-system");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let container = &pod["containers"][0];
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/livez");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert!(container["resources"]["requests"].is_object());
    let security = &container["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(strings(&security["capabilities"]["drop"]), vec!["ALL"]);
    assert_eq!(strings(&container["args"])[0], "controller");
}

/// The controller's image as `deploy/` (or an overlay in `dir`) renders it.
fn controller_image(docs: &[Value]) -> String {
    let deployment = docs
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .expect("Deployment");
    deployment["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .expect("image")
        .to_owned()
}

#[test]
fn the_image_is_the_one_make_image_tags_and_an_overlay_points_it_at_a_registry() {
    let image = controller_image(&kustomize());
    assert_eq!(
        image,
        format!("vigil:{}", env!("CARGO_PKG_VERSION")),
        "deploy/ runs what `make image` builds (deploy/image/build.sh tags the crate version)"
    );
    assert!(!image.ends_with(":latest"));

    // What `kustomize edit set image vigil=REGISTRY/vigil:TAG` writes, in an overlay.
    // Kustomize takes the base by a relative path only.
    let overlay = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("overlay dir");
    let depth = overlay
        .path()
        .strip_prefix(env!("CARGO_MANIFEST_DIR"))
        .expect("the overlay is under the crate")
        .components()
        .count();
    let base = format!("{}deploy", "../".repeat(depth));
    std::fs::write(
        overlay.path().join("kustomization.yaml"),
        format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n\
             resources:\n  - {}\n\
             images:\n  - name: vigil\n    newName: registry.example/platform/vigil\n    newTag: 0.1.0-rc.1\n",
            base
        ),
    )
    .expect("write overlay");
    let output = Command::new("kubectl")
        .arg("kustomize")
        .arg(overlay.path())
        .output()
        .expect("kubectl kustomize");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let docs = documents(&String::from_utf8_lossy(&output.stdout));
    assert_eq!(
        controller_image(&docs),
        "registry.example/platform/vigil:0.1.0-rc.1"
    );
}

#[test]
fn the_example_rollout_is_valid_and_its_route_is_routable() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/examples/rollout-with-httproute.yaml"
    );
    let docs = documents(&std::fs::read_to_string(path).expect("example"));
    let rollout: vigil::api::Rollout = serde_json::from_value(
        docs.iter()
            .find(|d| d["kind"] == "Rollout")
            .expect("a Rollout")
            .clone(),
    )
    .expect("a typed Rollout");
    let problems = vigil::rollout::validate_spec(&rollout.spec);
    assert!(problems.is_empty(), "{problems:?}");
    let canary = &rollout.spec.strategy.canary;
    let route = docs
        .iter()
        .find(|d| d["kind"] == "HTTPRoute")
        .expect("an HTTPRoute");
    assert_eq!(
        route["metadata"]["name"].as_str(),
        canary
            .traffic_routing
            .as_ref()
            .and_then(|t| t.gateway_api.as_ref())
            .map(|g| g.http_route.as_str())
    );
    let weight = vigil::traffic::gateway_api::canary_weight(
        route,
        canary.stable_service.as_deref().expect("stable"),
        canary.canary_service.as_deref().expect("canary"),
    );
    assert_eq!(weight, Ok(Some(0)));
    let services = docs.iter().filter(|d| d["kind"] == "Service").count();
    assert_eq!(services, 2);
}

/// The Rollout of `deploy/examples/<file>`, checked by the one validator, and its documents.
fn example(file: &str) -> (vigil::api::Rollout, Vec<Value>) {
    let path = format!("{}/deploy/examples/{file}", env!("CARGO_MANIFEST_DIR"));
    let docs = documents(&std::fs::read_to_string(path).expect("example"));
    let rollout: vigil::api::Rollout = serde_json::from_value(
        docs.iter()
            .find(|d| d["kind"] == "Rollout")
            .expect("a Rollout")
            .clone(),
    )
    .expect("a typed Rollout");
    let problems = vigil::rollout::validate_spec(&rollout.spec);
    assert!(problems.is_empty(), "{file}: {problems:?}");
    (rollout, docs)
}

fn named<'d>(docs: &'d [Value], kind: &str, name: &str) -> &'d Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

#[test]
fn the_nginx_smi_and_traefik_examples_are_valid_and_routable() {
    use vigil::traffic::{nginx, traefik};
    let (rollout, docs) = example("rollout-with-nginx.yaml");
    let canary = &rollout.spec.strategy.canary;
    let (stable, canary_service) = (
        canary.stable_service.as_deref().expect("stable"),
        canary.canary_service.as_deref().expect("canary"),
    );
    let routing = canary.traffic_routing.as_ref().expect("routing");
    let ingress = named(
        &docs,
        "Ingress",
        &routing.nginx.as_ref().expect("nginx").stable_ingress,
    );
    let spec = nginx::canary_spec(ingress, stable, canary_service).expect("routes to stable");
    assert_eq!(
        spec["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"],
        canary_service
    );

    let (rollout, docs) = example("rollout-with-smi.yaml");
    let canary = &rollout.spec.strategy.canary;
    let smi = canary
        .traffic_routing
        .as_ref()
        .and_then(|t| t.smi.as_ref())
        .expect("smi");
    for service in [
        smi.root_service.as_deref().expect("root"),
        canary.stable_service.as_deref().expect("stable"),
        canary.canary_service.as_deref().expect("canary"),
    ] {
        named(&docs, "Service", service);
    }
    assert!(
        !docs.iter().any(|d| d["kind"] == "TrafficSplit"),
        "vigil creates the TrafficSplit"
    );

    let (rollout, docs) = example("rollout-with-traefik.yaml");
    let canary = &rollout.spec.strategy.canary;
    let name = &canary
        .traffic_routing
        .as_ref()
        .and_then(|t| t.traefik.as_ref())
        .expect("traefik")
        .weighted_traefik_service_name;
    let service = named(&docs, "TraefikService", name);
    let weight = traefik::canary_weight(
        service,
        canary.stable_service.as_deref().expect("stable"),
        canary.canary_service.as_deref().expect("canary"),
    );
    assert_eq!(
        weight,
        Ok(Some(50)),
        "unset weights are Traefik's default 1:1"
    );
    let route = named(&docs, "IngressRoute", name);
    assert_eq!(
        route["spec"]["routes"][0]["services"][0]["kind"],
        "TraefikService"
    );
}

#[test]
fn network_policy_limits_egress_and_metrics_ingress() {
    let docs = kustomize();
    let policy = docs
        .iter()
        .find(|d| d["kind"] == "NetworkPolicy")
        .expect("deploy/ renders a NetworkPolicy");
    let spec = &policy["spec"];
    assert_eq!(
        spec["podSelector"]["matchLabels"]["app.kubernetes.io/component"],
        "controller"
    );
    let types = strings(&spec["policyTypes"]);
    assert!(types.contains(&"Ingress".to_owned()) && types.contains(&"Egress".to_owned()));
    let ingress = spec["ingress"].as_array().expect("ingress rules");
    assert_eq!(
        ingress.len(),
        1,
        "one ingress rule: metrics from monitoring"
    );
    assert_eq!(
        ingress[0]["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "monitoring"
    );
    assert_eq!(ingress[0]["ports"][0]["port"], "http-metrics");
    let egress = spec["egress"].as_array().expect("egress rules");
    for rule in egress {
        let to = rule["to"]
            .as_array()
            .expect("every egress rule names its peers");
        assert!(
            !to.is_empty(),
            "an egress rule without peers allows everything: {rule}"
        );
        assert!(
            rule["ports"].as_array().is_some_and(|p| !p.is_empty()),
            "every egress rule names its ports: {rule}"
        );
        for peer in to {
            assert_ne!(
                peer["ipBlock"]["cidr"], "0.0.0.0/0",
                "no egress to anywhere"
            );
        }
    }
    let ports: Vec<i64> = egress
        .iter()
        .flat_map(|r| r["ports"].as_array().cloned().unwrap_or_default())
        .filter_map(|p| p["port"].as_i64())
        .collect();
    for port in [53, 443, 9090] {
        assert!(ports.contains(&port), "egress to port {port}: {ports:?}");
    }
}

#[test]
fn the_header_routing_example_is_valid_and_its_managed_rules_build_on_its_route() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/examples/rollout-with-header-routing.yaml"
    );
    let docs = documents(&std::fs::read_to_string(path).expect("example"));
    let rollout: vigil::api::Rollout = serde_json::from_value(
        docs.iter()
            .find(|d| d["kind"] == "Rollout")
            .expect("a Rollout")
            .clone(),
    )
    .expect("a typed Rollout");
    let problems = vigil::rollout::validate_spec(&rollout.spec);
    assert!(problems.is_empty(), "{problems:?}");
    let route = docs
        .iter()
        .find(|d| d["kind"] == "HTTPRoute")
        .expect("an HTTPRoute");
    let steps = &rollout.spec.strategy.canary.steps;
    // At the analysis step both the header and the mirror route are in place.
    let wanted = vigil::rollout::wanted_routes(steps, 3);
    assert_eq!((wanted.header.len(), wanted.mirror.len()), (1, 1));
    for header in &wanted.header {
        vigil::traffic::gateway_api_routes::header_rule(
            route,
            "checkout-stable",
            "checkout-canary",
            header,
        )
        .expect("the header rule builds");
    }
    for mirror in &wanted.mirror {
        vigil::traffic::gateway_api_routes::mirror_rule(
            route,
            "checkout-stable",
            "checkout-canary",
            mirror,
        )
        .expect("the mirror rule builds");
    }
    assert!(
        vigil::rollout::wanted_routes(steps, steps.len())
            .header
            .len()
            == 1
    );
}

/// The Rollout, and the Istio objects of an example file.
fn istio_example(file: &str) -> (Vec<Value>, vigil::api::Rollout) {
    let path = format!("{}/deploy/examples/{file}", env!("CARGO_MANIFEST_DIR"));
    let docs = documents(&std::fs::read_to_string(path).expect("example"));
    let rollout: vigil::api::Rollout = serde_json::from_value(
        docs.iter()
            .find(|d| d["kind"] == "Rollout")
            .expect("a Rollout")
            .clone(),
    )
    .expect("a typed Rollout");
    let problems = vigil::rollout::validate_spec(&rollout.spec);
    assert!(problems.is_empty(), "{file}: {problems:?}");
    (docs, rollout)
}

#[test]
fn the_istio_examples_are_valid_and_their_objects_routable() {
    use vigil::traffic::istio::{Split, canary_weight, subset_revisions};
    let (docs, rollout) = istio_example("rollout-with-istio.yaml");
    let canary = &rollout.spec.strategy.canary;
    let istio = canary
        .traffic_routing
        .as_ref()
        .and_then(|t| t.istio.as_ref())
        .expect("trafficRouting.istio");
    let entry = istio.virtual_service.as_ref().expect("virtualService");
    let vs = docs
        .iter()
        .find(|d| d["kind"] == "VirtualService" && d["metadata"]["name"] == entry.name.as_str())
        .expect("its VirtualService");
    assert_eq!(vs["apiVersion"], "networking.istio.io/v1");
    let split = Split::Hosts {
        stable: canary.stable_service.clone().expect("stableService"),
        canary: canary.canary_service.clone().expect("canaryService"),
        namespace: "shop".into(),
    };
    assert_eq!(canary_weight(vs, &entry.routes, &split, &[]), Ok(Some(0)));
    assert_eq!(docs.iter().filter(|d| d["kind"] == "Service").count(), 2);

    let (docs, rollout) = istio_example("rollout-with-istio-subsets.yaml");
    let istio = rollout
        .spec
        .strategy
        .canary
        .traffic_routing
        .as_ref()
        .and_then(|t| t.istio.as_ref())
        .expect("trafficRouting.istio");
    let rule_ref = istio.destination_rule.as_ref().expect("destinationRule");
    let split = Split::Subsets {
        stable: rule_ref.stable_subset_name.clone(),
        canary: rule_ref.canary_subset_name.clone(),
    };
    let vs = docs
        .iter()
        .find(|d| d["kind"] == "VirtualService")
        .expect("a VirtualService");
    assert_eq!(canary_weight(vs, &[], &split, &[]), Ok(Some(0)));
    let rule = docs
        .iter()
        .find(|d| d["kind"] == "DestinationRule")
        .expect("a DestinationRule");
    assert_eq!(rule["metadata"]["name"], rule_ref.name.as_str());
    // vigil adds the revision label itself.
    assert_eq!(
        subset_revisions(
            rule,
            &rule_ref.stable_subset_name,
            &rule_ref.canary_subset_name,
            "vigil.dev/revision"
        ),
        Ok((None, None))
    );
}

//! The conversion as a whole, on the manifests of `tests/fixtures/convert/` (written from Argo
//! Rollouts' and Flagger's documentation): each trap mapped to what vigil means by it.

use super::*;
use crate::api::{AnalysisTemplateSpec, NoDataPolicy, RolloutSpec, WebhookType};

fn sources(file: &str, text: &str) -> Vec<Source> {
    crate::manifest::documents(text)
        .expect("YAML")
        .into_iter()
        .enumerate()
        .filter(|(_, d)| !d.is_null())
        .map(|(index, document)| Source {
            file: file.to_owned(),
            index,
            document: serde_json::to_value(&document).expect("JSON"),
        })
        .collect()
}

fn fixture(name: &str) -> Conversion {
    let path = format!(
        "{}/tests/fixtures/convert/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).expect("fixture");
    convert(&sources(name, &text))
}

fn rollout(conversion: &Conversion) -> &RolloutSpec {
    conversion
        .documents
        .iter()
        .find_map(|d| match d {
            Converted::Rollout(r) => Some(&r.spec),
            _ => None,
        })
        .expect("a Rollout")
}

fn template<'a>(conversion: &'a Conversion, name: &str) -> &'a AnalysisTemplateSpec {
    conversion
        .documents
        .iter()
        .find_map(|d| match d {
            Converted::AnalysisTemplate(t) if t.metadata.name.as_deref() == Some(name) => {
                Some(&t.spec)
            }
            Converted::ClusterAnalysisTemplate(t) if t.metadata.name.as_deref() == Some(name) => {
                Some(&t.spec.template)
            }
            _ => None,
        })
        .unwrap_or_else(|| panic!("template {name}"))
}

fn query(spec: &AnalysisTemplateSpec, metric: usize) -> &str {
    spec.metrics[metric]
        .provider
        .prometheus
        .as_ref()
        .and_then(|p| p.query.as_deref())
        .expect("query")
}

#[test]
fn argo_step_analysis_maps_every_trap_and_reports_nothing() {
    let converted = fixture("argo-step-analysis.yaml");
    assert_eq!(converted.unmapped, []);
    let spec = template(&converted, "success-rate");
    let metric = &spec.metrics[0];
    // `result[0] >= 0.95` on Argo's list is `result >= 0.95` on vigil's number.
    assert_eq!(metric.success_condition.as_deref(), Some("result >= 0.95"));
    let prometheus = metric.provider.prometheus.as_ref().expect("prometheus");
    // `timeout: 40` is seconds.
    assert_eq!(prometheus.timeout.as_deref(), Some("40s"));
    // `headers` move under `auth.headers`, `key` becomes `name`.
    let header = &prometheus.auth.as_ref().expect("auth").headers[0];
    assert_eq!(
        (header.name.as_str(), header.value.as_deref()),
        ("X-Scope-OrgID", Some("tenant_a"))
    );
    // `podTemplateHashValue: Latest` is vigil's built-in `canary-revision`.
    assert!(query(spec, 0).contains(r#"revision="{{args.canary-revision}}""#));
    assert!(!query(spec, 0).contains("canary-hash"));
    assert!(
        spec.args
            .iter()
            .any(|a| a.name == "canary-revision" && a.value.is_none())
    );
    let rollout = rollout(&converted);
    let steps = &rollout.strategy.canary.steps;
    assert_eq!(
        steps[1].pause.as_ref().and_then(|p| p.duration.as_deref()),
        Some("300s")
    );
    assert_eq!(
        steps[4].pause.as_ref().and_then(|p| p.duration.as_deref()),
        Some("1h30m")
    );
    let args = &steps[2].analysis.as_ref().expect("analysis").args;
    assert_eq!(
        args.len(),
        1,
        "the revision argument is vigil's to pass: {args:?}"
    );
    let routing = rollout
        .strategy
        .canary
        .traffic_routing
        .as_ref()
        .expect("routing");
    assert_eq!(
        routing.gateway_api.as_ref().map(|g| g.http_route.as_str()),
        Some("guestbook")
    );
}

#[test]
fn argo_background_analysis_maps_basic_auth_and_the_dry_run_list() {
    let converted = fixture("argo-background-analysis.yaml");
    let background = rollout(&converted)
        .strategy
        .canary
        .analysis
        .as_ref()
        .expect("background analysis");
    assert_eq!(background.starting_step, Some(2));
    let spec = template(&converted, "success-rate");
    let auth = spec.metrics[0]
        .provider
        .prometheus
        .as_ref()
        .and_then(|p| p.auth.as_ref())
        .expect("auth");
    let basic = auth.basic.as_ref().expect("basic");
    assert_eq!(basic.username, "123456");
    let secret = basic.password.secret_key_ref.as_ref().expect("secret");
    assert_eq!(
        (secret.name.as_str(), secret.key.as_str()),
        ("basicauth-secret", "secret")
    );
    // The Secret argument only fed the password: it is gone from the template.
    assert!(spec.args.iter().all(|a| a.name != "basicAuthSecret"));
    // `dryRun: [{metricName: latency}]` is `dryRun: true` on that metric only.
    assert!(!spec.metrics[0].dry_run);
    assert!(spec.metrics[1].dry_run);
    let paths: Vec<&str> = converted.unmapped.iter().map(|u| u.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "spec.strategy.canary.abortScaleDownDelaySeconds",
            "spec.strategy.canary.steps[8].experiment",
            "spec.strategy.canary.maxSurge",
            "spec.minReadySeconds",
        ]
    );
}

#[test]
fn argo_no_data_guards_become_the_no_data_policy() {
    let converted = fixture("argo-templates.yaml");
    let cluster = template(&converted, "error-count");
    assert_eq!(
        cluster.metrics[0].failure_condition.as_deref(),
        Some("result >= 10")
    );
    let guarded = template(&converted, "guarded");
    assert_eq!(
        guarded.metrics[0].success_condition.as_deref(),
        Some("isNaN(result) || result >= 0.95")
    );
    assert_eq!(guarded.metrics[0].no_data, None);
    let both = &guarded.metrics[1];
    assert_eq!(both.success_condition.as_deref(), Some("result >= 0.95"));
    assert_eq!(both.failure_condition.as_deref(), Some("result < 0.9"));
    // `len(result) == 0 || ...` passes without data; `len(result) > 0 and ...` on the
    // failure side says the same: no data is not a failure.
    assert_eq!(both.no_data, Some(NoDataPolicy::Pass));
    // The range query is left out; the OAuth2 one loses its auth; the web metric is vigil's.
    let portable = template(&converted, "not-portable");
    let names: Vec<&str> = portable.metrics.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["success-rate", "webmetric"]);
    let web = portable.metrics[1]
        .provider
        .web
        .as_ref()
        .expect("a web provider");
    assert_eq!(
        web.url,
        "http://my-server.com/api/v1/measurement?service={{ args.service-name }}"
    );
    assert_eq!(web.json_path.as_deref(), Some("{$.results.ok}"));
    assert_eq!(
        portable.metrics[1].success_condition.as_deref(),
        Some("result == true")
    );
    assert!(portable.args.iter().all(|a| a.name != "oauthSecret"));
}

#[test]
fn flagger_canary_becomes_steps_a_background_analysis_and_its_template() {
    let converted = fixture("flagger-metric-templates.yaml");
    let rollout = rollout(&converted);
    let canary = &rollout.strategy.canary;
    let weights: Vec<i32> = canary.steps.iter().filter_map(|s| s.set_weight).collect();
    // stepWeight 10 up to maxWeight 50.
    assert_eq!(weights, [10, 20, 30, 40, 50]);
    let pauses: Vec<Option<&str>> = canary
        .steps
        .iter()
        .filter_map(|s| s.pause.as_ref().map(|p| p.duration.as_deref()))
        .collect();
    // A pause of `interval` after each weight.
    assert_eq!(
        pauses,
        [Some("1m"), Some("1m"), Some("1m"), Some("1m"), Some("1m")]
    );
    // Flagger's webhooks keep their types; its loadtester `rollout` hook starts the load once
    // before traffic moves.
    let hooks: Vec<(&str, WebhookType, &str)> = canary
        .webhooks
        .iter()
        .map(|h| (h.name.as_str(), h.type_, h.url.as_str()))
        .collect();
    assert_eq!(
        hooks,
        [
            (
                "load-test",
                WebhookType::PreRollout,
                "http://flagger-loadtester.test/"
            ),
            (
                "promotion-gate",
                WebhookType::ConfirmPromotion,
                "http://flagger-loadtester.test/gate/approve"
            ),
        ]
    );
    assert_eq!(canary.webhooks[0].timeout.as_deref(), Some("5s"));
    assert!(canary.webhooks[0].metadata["cmd"].starts_with("hey -z 1m"));
    // Flagger's Gateway API router keeps the weights in the HTTPRoute named after the Service.
    let route = canary
        .traffic_routing
        .as_ref()
        .and_then(|r| r.gateway_api.as_ref());
    assert_eq!(route.map(|g| g.http_route.as_str()), Some("podinfo"));
    assert_eq!(canary.stable_service.as_deref(), Some("podinfo-primary"));
    assert_eq!(canary.canary_service.as_deref(), Some("podinfo-canary"));
    // The Deployment's pod template is the Rollout's, and the Deployment is not written out.
    assert_eq!(rollout.replicas, Some(2));
    assert!(
        rollout
            .template
            .as_ref()
            .and_then(|t| t.spec.as_ref())
            .is_some_and(|p| p.containers[0].name == "podinfod")
    );
    assert!(
        !converted
            .documents
            .iter()
            .any(|d| matches!(d, Converted::Other(_)))
    );
    let spec = template(&converted, "podinfo-analysis");
    // threshold 5: Flagger rolls back at the fifth failed check.
    assert!(spec.metrics.iter().all(|m| m.failure_limit == Some(4)));
    assert!(
        spec.metrics
            .iter()
            .all(|m| m.interval.as_deref() == Some("1m"))
    );
    // thresholdRange.max is a condition; {{ interval }} is the metric's window.
    assert_eq!(
        spec.metrics[0].success_condition.as_deref(),
        Some("result <= 5.0")
    );
    assert!(query(spec, 0).contains(r#"destination_workload="{{args.target}}""#));
    assert!(query(spec, 0).contains("}[1m]"));
    assert!(query(spec, 1).contains("}[30s]"));
    assert!(query(spec, 0).contains(r#"destination_workload_namespace="{{args.namespace}}""#));
    let target = spec
        .args
        .iter()
        .find(|a| a.name == "target")
        .expect("target");
    assert_eq!(target.value.as_deref(), Some("podinfo"));
    // The query that picks the canary by workload name is reported with the fix.
    let workload = converted
        .unmapped
        .iter()
        .find(|u| u.path == "spec.analysis.metrics[0].query")
        .expect("reported");
    assert!(
        workload
            .reason
            .contains("both revisions belong to one Rollout")
    );
    assert!(
        !converted
            .unmapped
            .iter()
            .any(|u| u.path == "spec.analysis.metrics[1].query"),
        "selecting by Service is fine"
    );
}

#[test]
fn flagger_builtin_metrics_become_vigil_templates_in_vigil_units() {
    let converted = fixture("flagger-builtin-metrics.yaml");
    let spec = template(&converted, "podinfo-analysis");
    // Success >= 99 % is an error ratio <= 0.01; p99 <= 500 ms is <= 0.5 s.
    assert_eq!(
        spec.metrics[0].success_condition.as_deref(),
        Some("result <= 0.01")
    );
    assert_eq!(
        spec.metrics[1].success_condition.as_deref(),
        Some("result <= 0.5")
    );
    // The canary is its Service, not a workload name.
    assert!(query(spec, 0).contains(r#"destination_service_name="{{args.canary-service}}""#));
    assert!(
        spec.args
            .iter()
            .any(|a| a.name == "canary-service" && a.value.as_deref() == Some("podinfo-canary"))
    );
    // threshold 3 and stepWeights.
    assert!(spec.metrics.iter().all(|m| m.failure_limit == Some(2)));
    let weights: Vec<i32> = rollout(&converted)
        .strategy
        .canary
        .steps
        .iter()
        .filter_map(|s| s.set_weight)
        .collect();
    assert_eq!(weights, [5, 10, 25, 50]);
    let address = spec.metrics[0]
        .provider
        .prometheus
        .as_ref()
        .and_then(|p| p.address.as_deref());
    assert_eq!(address, Some("http://prometheus.istio-system:9090"));
}

#[test]
fn a_metric_template_without_its_canary_is_reported_and_not_written() {
    let text = "apiVersion: flagger.app/v1beta1\nkind: MetricTemplate\nmetadata:\n  name: errors\nspec:\n  provider: {type: prometheus, address: http://p:9090}\n  query: sum(x)\n";
    let converted = convert(&sources("m.yaml", text));
    assert!(converted.documents.is_empty());
    assert_eq!(converted.unmapped.len(), 1);
    assert!(
        converted.unmapped[0]
            .reason
            .contains("referenced by no Canary")
    );
}

#[test]
fn a_blue_green_rollout_is_converted_field_for_field() {
    let text = r#"apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata:
  name: web
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: "web:2"}]}
  strategy:
    blueGreen:
      activeService: web-active
      previewService: web-preview
      previewReplicaCount: 1
      autoPromotionEnabled: true
      autoPromotionSeconds: 60
      scaleDownDelaySeconds: 45
      abortScaleDownDelaySeconds: 0
      antiAffinity: {preferredDuringSchedulingIgnoredDuringExecution: {weight: 1}}
      prePromotionAnalysis:
        templates: [{templateName: smoke}]
        args: [{name: service, value: web-preview}]
      postPromotionAnalysis:
        templates: [{templateName: error-rate, clusterScope: true}]
"#;
    let converted = convert(&sources("r.yaml", text));
    let rollout = match converted.documents.first() {
        Some(super::Converted::Rollout(rollout)) => (**rollout).clone(),
        other => panic!("{other:?}"),
    };
    let bg = rollout.spec.strategy.blue_green.clone().expect("blueGreen");
    assert!(rollout.spec.strategy.canary.is_unset());
    assert_eq!(bg.active_service.as_deref(), Some("web-active"));
    assert_eq!(bg.preview_service.as_deref(), Some("web-preview"));
    assert_eq!(bg.preview_replica_count, Some(1));
    assert_eq!(bg.auto_promotion_enabled, Some(true));
    assert_eq!(bg.auto_promotion_seconds, Some(60));
    assert_eq!(bg.scale_down_delay_seconds, Some(45));
    assert_eq!(bg.abort_scale_down_delay_seconds, None);
    let pre = bg.pre_promotion_analysis.expect("pre");
    assert_eq!(pre.templates[0].template_name, "smoke");
    assert_eq!(pre.args[0].name, "service");
    let post = bg.post_promotion_analysis.expect("post");
    assert!(post.templates[0].cluster_scope);
    let paths: Vec<&str> = converted.unmapped.iter().map(|u| u.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "spec.strategy.blueGreen.abortScaleDownDelaySeconds",
            "spec.strategy.blueGreen.antiAffinity"
        ],
        "{:?}",
        converted.unmapped
    );
    assert!(crate::rollout::validate_spec(&rollout.spec).is_empty());
}

#[test]
fn hostile_shapes_are_reported_never_a_panic() {
    for text in [
        "apiVersion: argoproj.io/v1alpha1\nkind: Rollout\nspec: 3\n",
        "apiVersion: argoproj.io/v1alpha1\nkind: Rollout\nspec:\n  strategy:\n    canary:\n      steps: {a: 1}\n",
        "apiVersion: argoproj.io/v1alpha1\nkind: AnalysisTemplate\nspec:\n  metrics: [3, {name: x, provider: 4}]\n",
        "apiVersion: flagger.app/v1beta1\nkind: Canary\nspec:\n  targetRef: {name: x}\n  analysis: {stepWeight: -5, stepWeights: [1, 900, -1]}\n",
        "apiVersion: flagger.app/v1beta1\nkind: Canary\nspec:\n  targetRef: {name: x}\n  analysis: {stepWeight: 1, maxWeight: 2147483647}\n",
    ] {
        let converted = convert(&sources("h.yaml", text));
        assert!(!converted.unmapped.is_empty(), "{text}");
        to_yaml(&converted.documents).expect("writes");
    }
}

#[test]
fn the_no_data_policy_of_a_guard_is_kept() {
    let text = "apiVersion: argoproj.io/v1alpha1\nkind: AnalysisTemplate\nmetadata:\n  name: t\nspec:\n  metrics:\n  - name: m\n    successCondition: len(result) == 0 || result[0] >= 0.95\n    provider:\n      prometheus: {address: 'http://p:9090', query: 'sum(x)'}\n";
    let converted = convert(&sources("t.yaml", text));
    let spec = template(&converted, "t");
    assert_eq!(spec.metrics[0].no_data, Some(NoDataPolicy::Pass));
    assert_eq!(converted.unmapped, []);
}

#[test]
fn what_vigil_would_refuse_is_reported_by_the_conversion_not_left_to_lint() {
    let text = "apiVersion: argoproj.io/v1alpha1\nkind: AnalysisTemplate\nmetadata:\n  name: t\nspec:\n  metrics:\n  - name: m\n    successCondition: result[0] > 1\n    provider:\n      prometheus: {address: 'http://p:9090', query: 'sum(x)', timeout: 600}\n";
    let converted = convert(&sources("t.yaml", text));
    assert_eq!(converted.unmapped.len(), 1, "{:?}", converted.unmapped);
    let line = converted.unmapped[0].to_string();
    assert!(line.starts_with("t.yaml: [0] spec.metrics[0].provider.prometheus.timeout: vigil refuses the converted AnalysisTemplate `t`"), "{line}");
    assert!(line.contains("MAX_QUERY_TIMEOUT"), "{line}");
}

#[test]
fn argo_workload_ref_is_vigil_workload_ref() {
    let converted = fixture("argo-workload-ref.yaml");
    assert_eq!(converted.unmapped, []);
    let workload = rollout(&converted)
        .workload_ref
        .as_ref()
        .expect("workloadRef");
    assert_eq!(workload.name, "rollout-ref-deployment");
    assert_eq!(
        workload.scale_down,
        Some(crate::api::ScaleDown::Progressively)
    );
    assert!(rollout(&converted).template.is_none());
    // The Deployment is not a Canary's target: it stays, passed through.
    assert!(
        converted
            .documents
            .iter()
            .any(|d| matches!(d, Converted::Other(_)))
    );
}

#[test]
fn a_canary_whose_deployment_is_not_given_adopts_it_through_workload_ref() {
    let text = "apiVersion: flagger.app/v1beta1\nkind: Canary\nmetadata:\n  name: podinfo\nspec:\n  provider: gatewayapi:v1\n  targetRef: {apiVersion: apps/v1, kind: Deployment, name: podinfo}\n  service: {port: 9898}\n  analysis:\n    interval: 1m\n    stepWeight: 50\n    metrics:\n    - name: request-success-rate\n      thresholdRange: {min: 99}\n";
    let converted = convert(&sources("c.yaml", text));
    let spec = rollout(&converted);
    let workload = spec.workload_ref.as_ref().expect("workloadRef");
    assert_eq!(
        (workload.kind.as_str(), workload.name.as_str()),
        ("Deployment", "podinfo")
    );
    assert_eq!(
        workload.scale_down,
        Some(crate::api::ScaleDown::Progressively)
    );
    let labels = spec.selector.match_labels.as_ref().expect("labels");
    assert_eq!(labels.get("app").map(String::as_str), Some("podinfo"));
    let paths: Vec<&str> = converted.unmapped.iter().map(|u| u.path.as_str()).collect();
    // The Services and the assumed selector are reported, and the built-in metric Flagger
    // measured with app-level metrics under Gateway API (no vigil template: left out, and with
    // it the analysis template); the router maps.
    assert_eq!(
        paths,
        [
            "spec.service",
            "spec.analysis.metrics[0]",
            "spec.targetRef",
            // Without the Deployment its replicas are unknown, and the Rollout would run 1 pod
            // while the Deployment gives way to it: refused until the count is written.
            "spec.replicas"
        ],
        "{:?}",
        converted.unmapped
    );
    assert!(spec.strategy.canary.analysis.is_none());
    assert_eq!(converted.documents.len(), 1);
    assert!(spec.strategy.canary.traffic_routing.is_some());
}

#[test]
fn secret_arguments_in_headers_and_ca_become_secret_references_and_templated_headers_are_reported()
{
    let text = r#"apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata: {name: t}
spec:
  args:
  - name: tenant
    valueFrom: {secretKeyRef: {name: mimir, key: tenant}}
  - name: token
    valueFrom: {secretKeyRef: {name: mimir, key: token}}
  - name: ca
    valueFrom: {secretKeyRef: {name: mimir, key: ca.crt}}
  metrics:
  - name: m
    successCondition: result[0] < 1
    provider:
      prometheus:
        address: https://mimir.example.com/prometheus
        caCert: "{{ args.ca }}"
        headers:
        - {key: X-Scope-OrgID, value: "{{args.tenant}}"}
        - {key: Authorization, value: "Bearer {{args.token}}"}
        query: sum(x)
"#;
    let converted = convert(&sources("t.yaml", text));
    let spec = template(&converted, "t");
    let auth = spec.metrics[0]
        .provider
        .prometheus
        .as_ref()
        .and_then(|p| p.auth.as_ref())
        .expect("auth");
    assert_eq!(auth.headers.len(), 1);
    let tenant = auth.headers[0]
        .value_from
        .as_ref()
        .and_then(|v| v.secret_key_ref.as_ref())
        .expect("secret");
    assert_eq!(
        (tenant.name.as_str(), tenant.key.as_str()),
        ("mimir", "tenant")
    );
    assert_eq!(auth.headers[0].value, None);
    let ca = auth
        .ca_bundle
        .as_ref()
        .and_then(|c| c.secret_key_ref.as_ref())
        .expect("ca");
    assert_eq!(ca.key, "ca.crt");
    // No Secret argument is left in the template: each one fed `auth` only.
    assert!(spec.args.is_empty(), "{:?}", spec.args);
    let paths: Vec<&str> = converted.unmapped.iter().map(|u| u.path.as_str()).collect();
    assert_eq!(
        paths,
        ["spec.metrics[0].provider.prometheus.headers[1].value"]
    );
    assert!(converted.unmapped[0].reason.contains("auth.bearerToken"));
}

#[test]
fn an_argo_workload_ref_is_kept_as_it_is() {
    let text = "apiVersion: argoproj.io/v1alpha1\nkind: Rollout\nmetadata:\n  name: web\nspec:\n  replicas: 3\n  selector:\n    matchLabels: {app: web}\n  workloadRef:\n    apiVersion: apps/v1\n    kind: Deployment\n    name: web\n    scaleDown: onsuccess\n  strategy:\n    canary:\n      steps: [{setWeight: 20}]\n";
    let converted = convert(&sources("r.yaml", text));
    assert!(converted.unmapped.is_empty(), "{:?}", converted.unmapped);
    let spec = rollout(&converted);
    let workload = spec.workload_ref.as_ref().expect("workloadRef");
    assert_eq!(workload.name, "web");
    assert_eq!(workload.scale_down, Some(crate::api::ScaleDown::OnSuccess));
    assert!(spec.template.is_none());
    assert!(crate::rollout::validate_spec(spec).is_empty());
}

#[test]
fn header_and_mirror_routes_carry_over_and_a_field_vigil_lacks_is_named() {
    let converted = fixture("argo-header-mirror-routes.yaml");
    assert_eq!(converted.unmapped, []);
    let canary = &rollout(&converted).strategy.canary;
    let routing = canary.traffic_routing.as_ref().expect("routing");
    let names: Vec<&str> = routing
        .managed_routes
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(names, ["set-header-1", "mirror-route"]);
    let header = canary.steps[1]
        .set_header_route
        .as_ref()
        .expect("header route");
    assert_eq!(header.match_[0].header_name, "X-Test");
    assert_eq!(header.match_[0].header_value.exact.as_deref(), Some("test"));
    let mirror = canary.steps[2]
        .set_mirror_route
        .as_ref()
        .expect("mirror route");
    assert_eq!(mirror.percentage, Some(35));
    // A route step without `match` removes the route.
    assert!(
        canary.steps[4]
            .set_header_route
            .as_ref()
            .is_some_and(|r| r.match_.is_empty())
    );

    let text = "apiVersion: argoproj.io/v1alpha1\nkind: Rollout\nmetadata:\n  name: r\nspec:\n  strategy:\n    canary:\n      steps:\n      - setHeaderRoute:\n          name: h\n          match:\n          - headerName: x\n            headerValue: {exact: a, caseInsensitive: true}\n";
    let converted = convert(&sources("r.yaml", text));
    let paths: Vec<&str> = converted.unmapped.iter().map(|u| u.path.as_str()).collect();
    assert!(
        paths.contains(
            &"spec.strategy.canary.steps[0].setHeaderRoute.match[0].headerValue.caseInsensitive"
        ),
        "{paths:?}"
    );
}

#[test]
fn no_address_means_the_controllers_default_prometheus_as_in_argo_and_flagger() {
    let text = "apiVersion: argoproj.io/v1alpha1\nkind: AnalysisTemplate\nmetadata:\n  name: t\nspec:\n  metrics:\n  - name: m\n    successCondition: result[0] > 1\n    provider:\n      prometheus: {query: 'sum(x)'}\n";
    let converted = convert(&sources("t.yaml", text));
    assert_eq!(converted.unmapped, []);
    let prometheus = template(&converted, "t").metrics[0]
        .provider
        .prometheus
        .clone();
    assert_eq!(prometheus.and_then(|p| p.address), None);
}

#[test]
fn argo_istio_nginx_smi_and_traefik_routing_carry_over_with_unread_fields_named() {
    let rollout_with = |routing: &str| {
        format!(
            "apiVersion: argoproj.io/v1alpha1\nkind: Rollout\nmetadata:\n  name: web\nspec:\n  replicas: 2\n  selector:\n    matchLabels: {{app: web}}\n  template:\n    metadata:\n      labels: {{app: web}}\n    spec:\n      containers: [{{name: web, image: web:1}}]\n  strategy:\n    canary:\n      stableService: web-stable\n      canaryService: web-canary\n      trafficRouting:\n{routing}      steps: [{{setWeight: 20}}]\n"
        )
    };
    let istio = convert(&sources(
        "i.yaml",
        &rollout_with("        istio:\n          virtualService: {name: web, routes: [primary]}\n"),
    ));
    assert!(istio.unmapped.is_empty(), "{:?}", istio.unmapped);
    let routing = rollout(&istio).strategy.canary.traffic_routing.clone();
    let vs = routing
        .and_then(|r| r.istio)
        .and_then(|i| i.virtual_service);
    assert_eq!(
        vs.map(|v| (v.name, v.routes)),
        Some(("web".to_owned(), vec!["primary".to_owned()]))
    );

    let nginx = convert(&sources(
        "n.yaml",
        &rollout_with(
            "        nginx:\n          stableIngress: web\n          stableIngresses: [web2]\n",
        ),
    ));
    let paths: Vec<&str> = nginx.unmapped.iter().map(|u| u.path.as_str()).collect();
    assert_eq!(
        paths,
        ["spec.strategy.canary.trafficRouting.nginx.stableIngresses"],
        "{:?}",
        nginx.unmapped
    );
    let routing = rollout(&nginx).strategy.canary.traffic_routing.clone();
    assert_eq!(
        routing.and_then(|r| r.nginx).map(|n| n.stable_ingress),
        Some("web".to_owned())
    );

    let smi = convert(&sources(
        "s.yaml",
        &rollout_with(
            "        smi:\n          rootService: web\n          trafficSplitName: web-split\n",
        ),
    ));
    assert!(smi.unmapped.is_empty(), "{:?}", smi.unmapped);
    let traefik = convert(&sources(
        "t.yaml",
        &rollout_with("        traefik:\n          weightedTraefikServiceName: web-weighted\n"),
    ));
    assert!(traefik.unmapped.is_empty(), "{:?}", traefik.unmapped);
    let routing = rollout(&traefik).strategy.canary.traffic_routing.clone();
    assert_eq!(
        routing
            .and_then(|r| r.traefik)
            .map(|t| t.weighted_traefik_service_name),
        Some("web-weighted".to_owned())
    );
}

#[test]
fn argo_job_metric_maps_as_it_is_and_needs_no_condition() {
    let converted = fixture("argo-job-metric.yaml");
    let spec = template(&converted, "smoke-test");
    assert_eq!(spec.metrics.len(), 1, "{:?}", converted.unmapped);
    let job = spec.metrics[0].provider.job.as_ref().expect("job provider");
    let metadata = job.metadata.as_ref().expect("metadata");
    assert_eq!(metadata.labels.get("foo").map(String::as_str), Some("bar"));
    assert_eq!(job.spec["backoffLimit"], serde_json::json!(1));
    assert_eq!(
        job.spec["template"]["spec"]["containers"][0]["command"][1],
        serde_json::json!("http://{{args.service-name}}/health")
    );
    assert!(spec.metrics[0].success_condition.is_none());
    assert!(converted.unmapped.is_empty(), "{:?}", converted.unmapped);
    assert!(
        crate::analysis::template::validate_template(spec).is_empty(),
        "{:?}",
        crate::analysis::template::validate_template(spec)
    );
}

//! AnalysisTemplate, ClusterAnalysisTemplate and AnalysisRun.
// Several `printcolumn(type_ = "string")` entries look like duplicated attributes to clippy.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A reusable recipe for judging a canary: which metrics to measure, how often, and how to
/// decide. Rollouts reference templates by name from their `analysis` steps.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "vigil.dev",
    version = "v1alpha1",
    kind = "AnalysisTemplate",
    namespaced,
    status = "TemplateStatus",
    shortname = "vat",
    category = "vigil",
    doc = "A reusable, namespaced recipe for judging a canary: metrics, their queries, and the judges that decide.",
    printcolumn(
        name = "Metrics",
        type_ = "string",
        json_path = ".spec.metrics[*].name"
    ),
    printcolumn(
        name = "Problems",
        type_ = "string",
        json_path = ".status.problems[*]",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisTemplateSpec {
    /// Arguments the template's queries use as `{{args.NAME}}`. An argument without a `value`
    /// must be supplied by the Rollout (or by `vigil analyze --arg`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<Argument>,
    /// The metrics to measure. Every metric is judged on its own; the run fails when any metric
    /// fails (metrics in `dryRun` excepted).
    pub metrics: Vec<Metric>,
    /// How Mann–Whitney verdicts of several metrics combine into one score (Kayenta-style).
    /// When set, the `mannWhitney` metrics are judged together by that score instead of one
    /// by one (see `Scoring`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scoring: Option<Scoring>,
}

/// The cluster-scoped twin of AnalysisTemplate, shared by every namespace.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "vigil.dev",
    version = "v1alpha1",
    kind = "ClusterAnalysisTemplate",
    status = "TemplateStatus",
    shortname = "vcat",
    category = "vigil",
    doc = "A cluster-scoped recipe for judging a canary, usable from every namespace.",
    printcolumn(
        name = "Metrics",
        type_ = "string",
        json_path = ".spec.metrics[*].name"
    ),
    printcolumn(
        name = "Problems",
        type_ = "string",
        json_path = ".status.problems[*]",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterAnalysisTemplateSpec {
    /// Same as `AnalysisTemplate.spec`.
    #[serde(flatten)]
    pub template: AnalysisTemplateSpec,
}

/// What the controller found when it validated a template.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateStatus {
    /// The `metadata.generation` that was validated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The problems found (the same lines `vigil lint` prints); empty when the template is valid.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

/// One named argument, with a literal value or a reference to where the value lives.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Argument {
    /// The name used in queries as `{{args.NAME}}`.
    pub name: String,
    /// The value. In a template it is the default; in a Rollout or AnalysisRun it is the value
    /// passed in. Substituted into PromQL with label-value escaping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Read the value from a Secret or from a field of the Rollout instead of `value`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<ArgumentValueFrom>,
}

/// Where an argument's value comes from. Exactly one field is set.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ArgumentValueFrom {
    /// A key of a Secret in the Rollout's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<SecretKeySelector>,
    /// A field of the Rollout, e.g. `metadata.labels['app']` or `metadata.name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field_ref: Option<FieldSelector>,
}

/// A key within a Secret in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeySelector {
    /// The Secret's name.
    pub name: String,
    /// The key within the Secret's data.
    pub key: String,
}

/// A path to a field of the owning Rollout.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FieldSelector {
    /// The path, e.g. `metadata.name` or `metadata.labels['app']`.
    pub field_path: String,
}

/// One metric: how to measure it, how often, and how to judge each measurement.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Metric {
    /// A name unique within the template; it appears in status and in reasons.
    pub name: String,
    /// Time between two measurements, e.g. `1m`. Without it the metric is measured once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(ms|s|m|h))+$"))]
    pub interval: Option<String>,
    /// Wait this long after the run starts before the first measurement, e.g. `2m`, so the
    /// canary has served traffic before it is judged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(ms|s|m|h))+$"))]
    pub initial_delay: Option<String>,
    /// How many measurements to take. Unset: 1 without `interval`; with `interval`, the metric
    /// keeps measuring until the run is stopped (background analysis).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub count: Option<i32>,
    /// The metric fails when the number of Failed measurements exceeds this. Default 0: the
    /// first Failed measurement fails the metric.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub failure_limit: Option<i32>,
    /// The metric becomes Inconclusive when the number of Inconclusive measurements exceeds
    /// this. Default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub inconclusive_limit: Option<i32>,
    /// The metric ends in Error when more than this many measurements in a row could not be
    /// taken (Prometheus unreachable, timed out, answered an error). Default 4: the fifth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub consecutive_error_limit: Option<i32>,
    /// What a measurement with no data (an empty result) counts as. Default `inconclusive`:
    /// never a silent pass, never a silent fail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_data: Option<NoDataPolicy>,
    /// Measure and report, but never let this metric decide the run.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    /// Where the metric comes from.
    pub provider: MetricProvider,
    /// Threshold judge: a CEL expression over `result` that must hold for a measurement to be
    /// Successful, e.g. `result < 0.01`. With vector results `result` is a list of
    /// `{labels, value}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_condition: Option<String>,
    /// Threshold judge: a CEL expression over `result` that marks a measurement Failed when it
    /// holds, e.g. `result >= 0.05`. When both conditions are set and neither decides, the
    /// measurement is Inconclusive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_condition: Option<String>,
    /// Kayenta-compatible judge: a Mann–Whitney comparison of canary and baseline samples.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mann_whitney: Option<MannWhitneyJudge>,
    /// Anytime-valid sequential judge: checked at every measurement without inflating false
    /// alarms; fails a bad canary as soon as the evidence is conclusive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequential: Option<SequentialJudge>,
}

/// What a measurement with no data counts as.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum NoDataPolicy {
    /// Counts as Inconclusive (the default): the rollout pauses and says why.
    #[default]
    Inconclusive,
    /// Counts as Failed.
    Fail,
    /// Counts as Successful. Use only when silence is genuinely good news.
    Pass,
}

/// The source of a metric. Exactly one provider is set.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricProvider {
    /// Query a Prometheus-compatible server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusProvider>,
    /// Run a Kubernetes Job (on the local platform: its first container's command as a
    /// process); the measurement is Successful when it succeeds and Failed when it fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<JobProvider>,
    /// Send an HTTP request to any JSON API (Datadog, New Relic, an in-house service) and
    /// judge a value of its answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web: Option<WebProvider>,
}

/// A Job run as one measurement (Argo Rollouts' `job` provider): a smoke test, a load test,
/// any check whose exit status is the verdict. Runs only in namespaces labelled
/// `vigil.dev/job-provider: "enabled"`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobProvider {
    /// Labels and annotations added to the Job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<JobMetadata>,
    /// A batch/v1 JobSpec. vigil sets `activeDeadlineSeconds` (at most `timeout`),
    /// `backoffLimit` (default 0) and `ttlSecondsAfterFinished`.
    #[schemars(schema_with = "super::schema::preserve_unknown_fields")]
    pub spec: serde_json::Value,
    /// The longest a run of the Job may take, e.g. `5m`; default 10m, at most 1h. On
    /// Kubernetes it bounds `activeDeadlineSeconds`; locally the process is killed then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(ms|s|m|h))+$"))]
    pub timeout: Option<String>,
}

/// Metadata a job metric adds to its Jobs.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobMetadata {
    /// Labels added to the Job (vigil's own labels naming the run and metric win).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations added to the Job.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// An HTTP request whose JSON answer gives the measurement, as Argo Rollouts' `web` provider.
/// The value `jsonPath` selects becomes `result` in `successCondition`/`failureCondition`.
/// Arguments (`{{args.NAME}}`) may appear in the URL's path and query (percent-encoded), in
/// header values (no line breaks) and in the body (JSON-escaped), never in the URL's scheme,
/// host or port: a template decides where the request goes.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebProvider {
    /// The `http://` or `https://` URL to request, e.g.
    /// `https://api.example.com/v1/check?service={{args.service}}`. Redirects are not
    /// followed. `{{time.unix}}` (and `{{time.unix-5m}}`, minus a duration) is the
    /// measurement's time in Unix seconds, for APIs that ask for a window; it may also appear
    /// in `body` and `jsonBody`.
    pub url: String,
    /// The HTTP method: `GET` (the default), `POST` or `PUT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<WebMethod>,
    /// Headers sent with the request, with literal values. Put secrets in `auth` (read from a
    /// Secret or a file) or in a Secret argument, never here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<WebHeader>,
    /// The request body as text (for `POST` and `PUT`). Arguments in it are JSON-escaped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// The request body as a JSON object, sent with `Content-Type: application/json`; set it
    /// or `body`, not both. Arguments may appear in its strings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::schema::preserve_unknown_fields")]
    pub json_body: Option<serde_json::Value>,
    /// Which value of the JSON answer is `result`, as JSONPath (RFC 9535), in Argo's braces
    /// or without: `{$.data.ok}`, `$.series[0].pointlist[-1][1]`. Several matches make a
    /// list. Unset: the whole answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_path: Option<String>,
    /// Give up on the request after this many seconds. Default 10, at most 300.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 300))]
    pub timeout_seconds: Option<i64>,
    /// Skip the verification of the server's TLS certificate. Anyone on the path can then
    /// read the request (credentials included) and forge the answer; `vigil lint` warns.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
    /// Credentials, the same as the Prometheus provider's (`bearerToken`, `basic`, `headers`,
    /// `caBundle`): read from a Secret or a file when the measurement is taken, sent only to
    /// the origins the Secret lists, never stored or logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<PrometheusAuth>,
}

/// The HTTP method of a web metric.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum WebMethod {
    /// GET (the default).
    #[default]
    #[serde(rename = "GET")]
    Get,
    /// POST, with `body` or `jsonBody`.
    #[serde(rename = "POST")]
    Post,
    /// PUT, with `body` or `jsonBody`.
    #[serde(rename = "PUT")]
    Put,
}

/// One header of a web metric, as Argo writes it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebHeader {
    /// The header's name, e.g. `Content-Type`.
    pub key: String,
    /// The header's value; arguments may appear in it (no line breaks).
    pub value: String,
}

/// A Prometheus (or compatible: Thanos, Mimir, VictoriaMetrics) query.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusProvider {
    /// Base URL, e.g. `http://prometheus.monitoring:9090`. When unset, the default Prometheus
    /// the operator gave the controller applies (`vigil controller --prometheus`, or
    /// `VIGIL_PROMETHEUS`; `--prometheus` of `vigil analyze` and `vigil run`); with no
    /// default either, the run ends in Error naming this field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// The PromQL query for the threshold judge. Must yield one value, or a vector the
    /// conditions handle as a list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// The canary's query for comparison judges (`mannWhitney`, `sequential`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_query: Option<String>,
    /// The baseline's (stable version's) query for comparison judges.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_query: Option<String>,
    /// Request counts of the canary, for the sequential error-count test: the traffic share
    /// each arm received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_requests_query: Option<String>,
    /// Request counts of the baseline, for the sequential error-count test.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_requests_query: Option<String>,
    /// Give up on one query after this long, e.g. `10s` (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(ms|s|m|h))+$"))]
    pub timeout: Option<String>,
    /// How to authenticate. Secrets are read when the measurement is taken and never logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<PrometheusAuth>,
}

/// Authentication for a Prometheus provider.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusAuth {
    /// A bearer token sent as `Authorization: Bearer ...`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token: Option<SecretSource>,
    /// HTTP basic authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic: Option<BasicAuth>,
    /// Extra headers, e.g. `X-Scope-OrgID` for Mimir or Cortex tenants.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderSource>,
    /// PEM bundle of the certificate authorities that sign the server's certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<SecretSource>,
}

/// A secret value kept in a Secret or in a file (e.g. a projected service-account token).
/// Exactly one field is set.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretSource {
    /// A key of a Secret in the Rollout's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<SecretKeySelector>,
    /// A file path readable by the controller, re-read at each measurement so rotated
    /// tokens are picked up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

/// HTTP basic authentication credentials.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BasicAuth {
    /// The user name (not secret).
    pub username: String,
    /// Where the password is kept.
    pub password: SecretSource,
}

/// One extra HTTP header, with a literal value or a secret one.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeaderSource {
    /// The header's name.
    pub name: String,
    /// A literal value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// A secret value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<SecretSource>,
}

/// Which change of the canary relative to the baseline counts against it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Direction {
    /// Only an increase fails (latency, error rate).
    Increase,
    /// Only a decrease fails (throughput, success rate).
    Decrease,
    /// Either way fails.
    #[default]
    Either,
}

/// What to do with NaN samples before a comparison.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum NanStrategy {
    /// Drop them (the default).
    #[default]
    Remove,
    /// Count them as 0.
    Replace,
}

/// How the size of a change is measured for the effect-size gate.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum EffectSizeMeasure {
    /// Ratio of the canary's mean to the baseline's mean (Kayenta's default).
    #[default]
    MeanRatio,
    /// Common-language effect size: P(canary sample > baseline sample).
    Cles,
}

/// Kayenta-compatible Mann–Whitney judge over samples of the canary and the baseline taken as
/// range queries (one sample per `step`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MannWhitneyJudge {
    /// Which change fails the metric. Default `either`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,
    /// Confidence level of the interval for the shift, in (0, 1). Default 0.98 (Kayenta's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f64>,
    /// A shift counts only when its interval excludes `tolerance × |estimate|`. Default 0.25.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerance: Option<f64>,
    /// Effect-size gate for High: the change must also exceed this. Default 1.0 (mean ratio).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_increase: Option<f64>,
    /// Effect-size gate for Low. Default 1.0 (mean ratio).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_decrease: Option<f64>,
    /// A High beyond this effect size marks the whole run failed at once (with `critical`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub critical_increase: Option<f64>,
    /// A Low beyond this effect size marks the whole run failed at once (with `critical`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub critical_decrease: Option<f64>,
    /// How effect size is measured. Default `meanRatio`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect_size_measure: Option<EffectSizeMeasure>,
    /// A critical metric that fails (or has no data) sets the score to 0.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub critical: bool,
    /// No data fails the metric instead of being ignored by the score.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub must_have_data: bool,
    /// What to do with NaN samples. Default `remove`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nan_strategy: Option<NanStrategy>,
    /// Remove samples beyond `outlierFactor` interquartile ranges before the test.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub remove_outliers: bool,
    /// IQR multiplier for outlier removal. Default 3.0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_factor: Option<f64>,
    /// Resolution of the range queries that give the samples, e.g. `1m` (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(ms|s|m|h))+$"))]
    pub step: Option<String>,
    /// Group for scoring (see `spec.scoring.groupWeights`). Default: the metric's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

/// How Mann–Whitney metrics combine into a Kayenta-style score out of 100.
///
/// With scoring, the run's `mannWhitney` metrics (dry-run ones excepted) are judged together,
/// round by round: round n takes the n-th measurement of each of them. A group's score is the
/// share of its metrics that passed; the run's score is the weighted sum of the groups'. A
/// round below `marginalThreshold` fails the run at once (a critical metric failing, or
/// without data, scores 0); the last round passes the metrics at or above `passThreshold` and
/// leaves them Inconclusive between the two. A round where half the metrics or more have no
/// data (or an error) is not scored and fails nothing. The metrics' own `failureLimit` and
/// `inconclusiveLimit` are not used; `consecutiveErrorLimit` is.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Scoring {
    /// Weight of each group, in percent; groups not listed share the rest equally.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub group_weights: BTreeMap<String, f64>,
    /// A round scoring below this fails the run. Default 75.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub marginal_threshold: Option<f64>,
    /// The last round passes at or above this; between the two it is Inconclusive.
    /// Default 95.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pass_threshold: Option<f64>,
}

impl Scoring {
    /// `marginalThreshold` when the template leaves it out.
    pub const DEFAULT_MARGINAL_THRESHOLD: f64 = 75.0;
    /// `passThreshold` when the template leaves it out.
    pub const DEFAULT_PASS_THRESHOLD: f64 = 95.0;
}

/// How a round of scored Mann–Whitney metrics classified.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ScoreClassification {
    /// At or above `passThreshold`.
    Pass,
    /// Between the thresholds.
    Marginal,
    /// Below `marginalThreshold`.
    Fail,
    /// Half the metrics or more had no data or an error: not scored.
    NoData,
}

/// The score of the latest round of a run's scored Mann–Whitney metrics.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunScore {
    /// The round: the n-th measurement of every scored metric.
    pub round: i32,
    /// The score, 0–100.
    pub score: f64,
    /// How the score compares with the thresholds.
    pub classification: ScoreClassification,
    /// Each group's score, 0–100.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub group_scores: BTreeMap<String, f64>,
    /// Why: the score and thresholds, or the critical metric or missing data that zeroed it,
    /// then each metric's verdict in the round.
    pub reason: String,
}

/// Which sequential test a metric runs.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum SequentialTest {
    /// Error counts of canary vs baseline (queries give counts of errors; the requests
    /// queries give the traffic share): a Beta-binomial mixture test on the rate ratio.
    #[default]
    ErrorCounts,
    /// Latency histograms (queries give cumulative `le` bucket counts): a time-uniform test
    /// that the canary is stochastically slower.
    Latency,
}

/// Anytime-valid sequential judge: evaluated at every measurement without inflating false
/// alarms. Fails as soon as the confidence sequence for the effect lies above the allowed
/// margin, passes early when it lies inside the equivalence margin, and is Inconclusive at the
/// deadline, reporting the smallest effect the data could have detected.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SequentialJudge {
    /// Which test to run. Default `errorCounts`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<SequentialTest>,
    /// Probability of failing a canary that is as good as the baseline, for the whole run; it
    /// is split across the sequential metrics of the run. Default 0.01.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha: Option<f64>,
    /// Relative degradation tolerated before failing: the canary fails when its rate (or slow
    /// share) is surely above `(1 + failMargin)` × the baseline's. Default 0: fail when the
    /// canary is surely worse than the baseline at all (the configuration benches/README.md
    /// measures).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_margin: Option<f64>,
    /// Equivalence margin for passing early: pass when the ratio is surely below
    /// `(1 + passMargin)`. Default 0.25. Below `failMargin` it leaves an indifference zone: a
    /// canary whose ratio lies between the margins is Inconclusive at the last measurement,
    /// with the smallest ratio the data could have detected. At or above it every ratio is
    /// eventually decided, by whichever statement the evidence reaches first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pass_margin: Option<f64>,
    /// Allow a Successful verdict before the last measurement. Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pass_early: Option<bool>,
    /// For `latency`: the bucket boundary (seconds, an `le` value) above which a request
    /// counts as slow, e.g. 0.5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow_threshold_seconds: Option<f64>,
    /// For `errorCounts`: a label whose values are strata of each arm, e.g. `pod`,
    /// `instance` or `zone`. The four count queries then return one series per value
    /// (`sum by (pod) (...)`, at most 64 per arm). The test still compares the arms' totals;
    /// errors that vary between one arm's strata more than their traffic explains (one noisy
    /// pod) widen the test by that overdispersion instead of failing the canary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stratify_by: Option<String>,
}

impl SequentialJudge {
    /// `alpha` when the template leaves it out.
    pub const DEFAULT_ALPHA: f64 = 0.01;
    /// `failMargin` when the template leaves it out.
    pub const DEFAULT_FAIL_MARGIN: f64 = 0.0;
    /// `passMargin` when the template leaves it out.
    pub const DEFAULT_PASS_MARGIN: f64 = 0.25;
}

/// One execution of analysis templates with resolved arguments.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "vigil.dev",
    version = "v1alpha1",
    kind = "AnalysisRun",
    namespaced,
    status = "AnalysisRunStatus",
    shortname = "var",
    category = "vigil",
    doc = "One execution of analysis templates with resolved arguments; its status holds each metric's counters and latest measurements with their values, verdicts and reasons.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Message",
        type_ = "string",
        json_path = ".status.message",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisRunSpec {
    /// The metrics, copied from the templates when the run was created, so that editing a
    /// template never changes a run in flight.
    pub metrics: Vec<Metric>,
    /// The resolved arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<Argument>,
    /// Scoring of Mann–Whitney metrics, copied from the template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scoring: Option<Scoring>,
    /// Set to stop the run: it ends Terminated (never Successful) after its current
    /// measurement.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub terminate: bool,
    /// The run is a Rollout's background analysis (set by the controller): a sequential
    /// metric that passes starts a fresh test instead of ending, so a regression that begins
    /// later is still caught; the k-th test spends α / 2^(k+1), all of them at most α.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub background: bool,
}

/// The phase of a run, of a metric, or the verdict of one measurement.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum AnalysisPhase {
    /// Not started.
    #[default]
    Pending,
    /// Measuring.
    Running,
    /// Judged good.
    Successful,
    /// Judged bad.
    Failed,
    /// The evidence could not decide (no data, too little traffic, between thresholds).
    Inconclusive,
    /// Measurements could not be taken.
    Error,
    /// Stopped before it could decide; never counts as a success.
    Terminated,
}

impl AnalysisPhase {
    /// True when the phase can no longer change.
    pub fn is_completed(self) -> bool {
        !matches!(self, AnalysisPhase::Pending | AnalysisPhase::Running)
    }
}

/// What a run has measured and decided so far.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisRunStatus {
    /// The run's phase: the worst of its deciding metrics once they complete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<AnalysisPhase>,
    /// Why the run is in its phase: the deciding metric and its reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the run started measuring, to the microsecond (a status written with whole
    /// seconds reads as before): the first measurements are counted from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<MicroTime>,
    /// When the run completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
    /// One entry per metric.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metric_results: Vec<MetricResult>,
    /// The latest round's score, when the run's templates set `scoring`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<RunScore>,
}

/// The measurements and verdict of one metric.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricResult {
    /// The metric's name.
    pub name: String,
    /// The metric's phase.
    pub phase: AnalysisPhase,
    /// Why the metric is in its phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Measurements taken so far (including those dropped from `measurements`).
    #[serde(default)]
    pub count: i32,
    /// Successful measurements.
    #[serde(default)]
    pub successful: i32,
    /// Failed measurements.
    #[serde(default)]
    pub failed: i32,
    /// Inconclusive measurements.
    #[serde(default)]
    pub inconclusive: i32,
    /// Measurements that could not be taken.
    #[serde(default)]
    pub error: i32,
    /// Measurements in a row that could not be taken.
    #[serde(default)]
    pub consecutive_error: i32,
    /// True when this metric is in dry-run: reported, never deciding.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    /// The most recent measurements, oldest first (bounded; counters above keep the totals).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub measurements: Vec<MeasurementRecord>,
    /// A measurement started and not yet judged (a job metric's running Job).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_flight: Option<InFlightMeasurement>,
    /// Incremental state of a sequential judge, carried between measurements.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::schema::preserve_unknown_fields")]
    pub sequential_state: Option<serde_json::Value>,
}

/// One measurement as stored in status.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeasurementRecord {
    /// The verdict of this measurement (Successful, Failed, Inconclusive or Error).
    pub phase: AnalysisPhase,
    /// The time the measurement is for (the query's evaluation time), to the microsecond (a
    /// status written with whole seconds reads as before): the next measurement is due
    /// `interval` after it, never sooner.
    pub started_at: MicroTime,
    /// The value, as text: a number, `NaN`, `+Inf`, a vector, or empty for no data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Why: the value, the condition or test, the sample sizes, the confidence bounds; or the
    /// provider error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// This verdict zeroes the run's score: a critical Mann–Whitney metric failing past its
    /// critical effect size, or without data.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub critical: bool,
}

/// A measurement that spans time (a job metric's Job), between its start and its verdict.
/// Kept in status so that a restarted controller follows the same Job instead of starting
/// another.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InFlightMeasurement {
    /// When the measurement started.
    pub started_at: Time,
    /// The Job (locally: the process) taking it: `<run>-<metric>-<n>`, bounded to 63
    /// characters.
    pub job: String,
}

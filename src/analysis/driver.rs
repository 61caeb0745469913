//! Advancing an AnalysisRun: the thin async shell around the pure lifecycle
//! (`analysis::run`). Shared by `vigil analyze`, the local platform and the controller.

use jiff::Timestamp;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::analysis::job::{self, JobRunner};
use crate::analysis::measure::{Measured, RunContext, measure_metric, measure_web};
use crate::analysis::provider::prometheus::{ConcurrencyLimiter, PrometheusClient};
use crate::analysis::provider::resolve::{
    CommandLinePrometheus, Origin, SecretReader, client_config, web_client_config,
};
use crate::analysis::provider::web::WebClient;
use crate::analysis::provider::{Chosen, bounded, chosen};
use crate::analysis::run::{self, MetricSchedule, RunError};
use crate::analysis::template::substitute::substituted_forms;
use crate::api::{AnalysisPhase, AnalysisRunSpec, AnalysisRunStatus, InFlightMeasurement, Metric};

/// Why a run's providers could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// A metric's provider cannot be configured.
    #[error("metrics[{index}] ({metric}): {reason}")]
    ConfigureProvider {
        /// Index of the metric.
        index: usize,
        /// The metric.
        metric: String,
        /// What is wrong.
        reason: String,
    },
    /// A Secret argument could not be read or used.
    #[error("args[{arg}]: {reason}")]
    ResolveSecretArgument {
        /// The argument.
        arg: String,
        /// Why (never the value).
        reason: String,
    },
    /// The run could not be planned or recorded.
    #[error(transparent)]
    Run(#[from] RunError),
}

/// What replaces a Secret-derived value in every string vigil stores or prints.
pub const REDACTED: &str = "<redacted>";

/// Replaces Secret-derived values, as written and as they appear once escaped into a query
/// or encoded into a URL, by [`REDACTED`]. Applied where a run's strings leave memory: its
/// status, its errors, its log lines.
#[derive(Clone, Default)]
pub struct Redactor {
    /// Every form of every value, longest first (so a longer form is replaced whole).
    needles: Vec<String>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print what is redacted.
        write!(f, "Redactor({} forms)", self.needles.len())
    }
}

impl Redactor {
    /// A redactor of `values` (empty values are ignored).
    pub fn new<I: IntoIterator<Item = String>>(values: I) -> Redactor {
        let mut needles = Vec::new();
        for value in values.into_iter().filter(|v| !v.is_empty()) {
            for form in substituted_forms(&value) {
                let encoded: String =
                    url::form_urlencoded::byte_serialize(form.as_bytes()).collect();
                let json = serde_json::to_string(&form).unwrap_or_default();
                needles.push(json.trim_matches('"').to_owned());
                needles.push(crate::analysis::template::web::percent_encode(&form));
                needles.push(encoded);
                needles.push(form);
            }
        }
        needles.retain(|n| !n.is_empty());
        needles.sort_by_key(|n| std::cmp::Reverse(n.len()));
        needles.dedup();
        Redactor { needles }
    }

    /// This redactor, also redacting `values` (e.g. the credentials a run's clients send).
    pub fn extended<I: IntoIterator<Item = String>>(&self, values: I) -> Redactor {
        let mut needles = self.needles.clone();
        needles.extend(Redactor::new(values).needles);
        needles.sort_by_key(|n| std::cmp::Reverse(n.len()));
        needles.dedup();
        Redactor { needles }
    }

    /// Whether there is nothing to redact.
    pub fn is_empty(&self) -> bool {
        self.needles.is_empty()
    }

    /// `text` with every form of every value replaced.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for needle in &self.needles {
            if out.contains(needle.as_str()) {
                out = out.replace(needle.as_str(), REDACTED);
            }
        }
        out
    }

    /// A status with every string in it redacted (messages, reasons, values, judge state).
    pub fn redact_status(&self, status: &AnalysisRunStatus) -> AnalysisRunStatus {
        if self.is_empty() {
            return status.clone();
        }
        let redacted = serde_json::to_value(status).ok().and_then(|mut json| {
            self.redact_json(&mut json);
            serde_json::from_value(json).ok()
        });
        redacted.unwrap_or_else(|| Self::without_text(status))
    }

    /// Fails closed: should the round trip through JSON ever fail, keep the phase, times and
    /// counters but drop every free-text field.
    fn without_text(status: &AnalysisRunStatus) -> AnalysisRunStatus {
        let mut kept = status.clone();
        kept.message = Some(REDACTED.to_owned());
        kept.score = None;
        for result in &mut kept.metric_results {
            result.message = None;
            result.measurements.clear();
            result.sequential_state = None;
        }
        kept
    }

    fn redact_json(&self, value: &mut serde_json::Value) {
        match value {
            serde_json::Value::String(text) => *text = self.redact(text),
            serde_json::Value::Array(items) => items.iter_mut().for_each(|v| self.redact_json(v)),
            serde_json::Value::Object(fields) => {
                fields.values_mut().for_each(|v| self.redact_json(v));
            }
            _ => {}
        }
    }
}

/// A run ready to measure: its Secret arguments resolved and substituted in memory.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The spec with every query substituted. Never store or print it.
    pub spec: AnalysisRunSpec,
    /// Redacts the Secret-derived values from what leaves memory.
    pub redactor: Redactor,
}

/// Every origin the run's queries go to (each metric's address as `prometheus` chooses it).
/// A Secret argument is substituted into every query of the run, so it travels to each of
/// them; the controller also shares its slots fairly by these origins.
pub fn query_origins(
    spec: &AnalysisRunSpec,
    prometheus: &CommandLinePrometheus,
) -> Result<Vec<Origin>, DriverError> {
    let mut origins = Vec::new();
    for (index, metric) in spec.metrics.iter().enumerate() {
        let configure = |reason: String| DriverError::ConfigureProvider {
            index,
            metric: bounded(&metric.name).into_owned(),
            reason,
        };
        let (field, address) =
            match chosen(&metric.provider).map_err(|e| configure(e.to_string()))? {
                Chosen::Prometheus(provider) => (
                    "provider.prometheus.address",
                    prometheus
                        .address_of(provider)
                        .map_err(|e| configure(e.to_string()))?,
                ),
                // The destination is fixed by the template's text (no argument in scheme, host
                // or port), so the URL as written names the origin a Secret argument goes to.
                Chosen::Web(web) => (
                    "provider.web.url",
                    crate::analysis::provider::resolve::web_origin_url(&web.url)
                        .map_err(|e| configure(e.to_string()))?,
                ),
                // A Secret argument is refused in a Job spec (it would be stored in the Job).
                Chosen::Job(_) => continue,
            };
        let origin = Origin::of(&address).map_err(|reason| {
            configure(format!("{field} {:?}: {reason}", bounded(address.as_str())))
        })?;
        if !origins.contains(&origin) {
            origins.push(origin);
        }
    }
    Ok(origins)
}

/// Resolves a run's `valueFrom.secretKeyRef` arguments through `secrets` and substitutes all
/// its arguments into its queries (label-value escaping, shape checked), in memory only. A
/// Secret argument is read only when its Secret may be sent to every origin the run queries.
/// A run without Secret arguments is returned as it is (its queries were substituted when it
/// was created). Errors never carry a Secret's value.
pub fn prepare(
    spec: &AnalysisRunSpec,
    prometheus: &CommandLinePrometheus,
    secrets: &dyn SecretReader,
) -> Result<Prepared, DriverError> {
    check_run_bounds(spec)?;
    let has_secret_args = spec
        .args
        .iter()
        .any(|arg| crate::analysis::instantiate::secret_ref(arg).is_some());
    let origins = if has_secret_args {
        query_origins(spec, prometheus)?
    } else {
        Vec::new()
    };
    let mut values = std::collections::BTreeMap::new();
    let mut secret_values = Vec::new();
    for arg in &spec.args {
        match (crate::analysis::instantiate::secret_ref(arg), &arg.value) {
            (Some(selector), _) => {
                let fail = |reason: String| DriverError::ResolveSecretArgument {
                    arg: arg.name.clone(),
                    reason,
                };
                let mut bytes = Vec::new();
                for origin in &origins {
                    bytes = secrets
                        .read_secret(&selector.name, &selector.key, origin)
                        .map_err(fail)?;
                }
                let value = String::from_utf8(bytes).map_err(|_| {
                    fail(format!(
                        "secret {:?} key {:?} is not UTF-8",
                        selector.name, selector.key
                    ))
                })?;
                secret_values.push(value.clone());
                values.insert(arg.name.clone(), value);
            }
            (None, Some(value)) => {
                values.insert(arg.name.clone(), value.clone());
            }
            (None, None) => {}
        }
    }
    let redactor = Redactor::new(secret_values);
    if redactor.is_empty() {
        return Ok(Prepared {
            spec: spec.clone(),
            redactor,
        });
    }
    let mut prepared = spec.clone();
    let secret_args: Vec<String> = spec
        .args
        .iter()
        .filter(|arg| crate::analysis::instantiate::secret_ref(arg).is_some())
        .map(|arg| arg.name.clone())
        .collect();
    for (index, metric) in prepared.metrics.iter_mut().enumerate() {
        let configure =
            |e: crate::analysis::template::TemplateError| DriverError::ConfigureProvider {
                index,
                metric: metric.name.clone(),
                reason: redactor.redact(&e.to_string()),
            };
        if let Some(provider) = metric.provider.job.as_mut() {
            job::substitute_job_args(provider, &values, &secret_args).map_err(|e| {
                DriverError::ConfigureProvider {
                    index,
                    metric: metric.name.clone(),
                    reason: redactor.redact(&e.to_string()),
                }
            })?;
        }
        if let Some(prometheus) = metric.provider.prometheus.as_mut() {
            crate::analysis::instantiate::substitute_queries(prometheus, &values)
                .map_err(configure)?;
        }
        if let Some(web) = metric.provider.web.as_mut() {
            crate::analysis::template::web::substitute_web(web, &values).map_err(configure)?;
        }
    }
    Ok(Prepared {
        spec: prepared,
        redactor,
    })
}

/// The run's size bounds (metric count, name lengths), checked before anything is built from
/// its metrics, so an oversized run costs no client and no long error text.
pub fn check_run_bounds(spec: &AnalysisRunSpec) -> Result<(), DriverError> {
    Ok(run::check_bounds(spec)?)
}

/// How one metric of a run is measured, for the provider it names.
#[derive(Debug, Clone)]
pub enum MetricClient {
    /// By queries to a Prometheus-compatible server.
    Prometheus(PrometheusClient),
    /// By an HTTP request to a JSON API.
    Web(WebClient),
    /// By a job the platform's [`JobRunner`] runs.
    Job,
}

/// One client per metric, in the order of `spec.metrics`, each to the address `prometheus`
/// chooses (a web metric's own URL), after the run's size bounds are checked. Error texts
/// are bounded.
pub fn clients_for(
    spec: &AnalysisRunSpec,
    prometheus: &CommandLinePrometheus,
    secrets: &dyn SecretReader,
    limiter: &ConcurrencyLimiter,
) -> Result<Vec<MetricClient>, DriverError> {
    check_run_bounds(spec)?;
    spec.metrics
        .iter()
        .enumerate()
        .map(|(index, metric)| {
            let configure = |reason: String| DriverError::ConfigureProvider {
                index,
                metric: metric.name.clone(),
                reason: crate::analysis::provider::bounded_owned(reason),
            };
            match chosen(&metric.provider).map_err(|e| configure(e.to_string()))? {
                Chosen::Prometheus(provider) => {
                    let config = client_config(provider, prometheus, secrets)
                        .map_err(|e| configure(e.to_string()))?;
                    PrometheusClient::new(config, limiter)
                        .map(MetricClient::Prometheus)
                        .map_err(|e| configure(e.to_string()))
                }
                Chosen::Web(web) => {
                    let config =
                        web_client_config(web, secrets).map_err(|e| configure(e.to_string()))?;
                    WebClient::new(config, limiter)
                        .map(MetricClient::Web)
                        .map_err(|e| configure(e.to_string()))
                }
                Chosen::Job(job) => {
                    // Checked before any job starts, so a bad spec fails the run with the field.
                    job::job_spec(job).map_err(|e| configure(e.to_string()))?;
                    job::job_timeout(job).map_err(|e| configure(e.to_string()))?;
                    Ok(MetricClient::Job)
                }
            }
        })
        .collect()
}

impl MetricClient {
    /// The credential values the client sends (its `auth`), for the run's Redactor.
    pub fn credential_values(&self) -> &[String] {
        match self {
            MetricClient::Prometheus(client) => client.credential_values(),
            MetricClient::Web(client) => client.credential_values(),
            // A Job's pod reads its own Secrets; vigil sends none.
            MetricClient::Job => &[],
        }
    }
}

/// The run's Redactor extended by every credential its clients send: a `web` metric's writer
/// picks the path at a credential's origin, and an endpoint that echoes a header or errors
/// with the key would otherwise put it into the run's status.
pub fn redactor_with_credentials(redactor: &Redactor, clients: &[MetricClient]) -> Redactor {
    redactor.extended(
        clients
            .iter()
            .flat_map(|client| client.credential_values().iter().cloned()),
    )
}

/// Where measurement times come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MeasureAt {
    /// At the instant each measurement fell due (replays: deterministic).
    DueTime,
    /// At the given instant (live: now).
    Now(Timestamp),
}

/// The outcome of one advance.
#[derive(Debug, Clone, PartialEq)]
pub struct Advanced {
    /// The updated status.
    pub status: AnalysisRunStatus,
    /// When the run next needs attention; None once it completed.
    pub next_at: Option<Timestamp>,
    /// How many measurements were taken.
    pub measured: usize,
}

/// What came of one due measurement.
enum Outcome {
    /// Judged: record it.
    Measured(Measured),
    /// A job started: keep it in flight.
    Started(InFlightMeasurement),
    /// A job in flight is still running.
    StillRunning,
}

/// Takes (or starts, or checks on) one due measurement.
async fn take<J: JobRunner>(
    metric: &Metric,
    client: &MetricClient,
    jobs: &J,
    in_flight: Option<&InFlightMeasurement>,
    ordinal: i32,
    when: Timestamp,
    context: RunContext<'_>,
) -> Outcome {
    match (client, in_flight) {
        (MetricClient::Prometheus(client), _) => {
            Outcome::Measured(measure_metric(client, metric, when, context).await)
        }
        (MetricClient::Web(client), _) => {
            Outcome::Measured(measure_web(client, metric, when).await)
        }
        (MetricClient::Job, Some(in_flight)) => {
            if let Some(provider) = &metric.provider.job
                && let Some(measured) =
                    job::overdue(provider, &in_flight.job, in_flight.started_at.0, when)
            {
                jobs.stop(&in_flight.job).await;
                return Outcome::Measured(measured);
            }
            let state = jobs.check(&in_flight.job).await;
            match job::verdict(&state, &in_flight.job, in_flight.started_at.0) {
                Some(measured) => Outcome::Measured(measured),
                None => Outcome::StillRunning,
            }
        }
        (MetricClient::Job, None) => match jobs.start(metric, ordinal).await {
            Ok(job) => Outcome::Started(InFlightMeasurement {
                started_at: Time(when),
                job,
            }),
            Err(reason) => Outcome::Measured(job::not_started(reason, when)),
        },
    }
}

/// Brings a run up to date at `now`: takes every measurement due (concurrently), judges and
/// records them, keeping at most `keep` measurements per metric. Job metrics start their job
/// through `jobs`, stay in flight in the status, and are checked on at each advance.
pub async fn advance<J: JobRunner>(
    spec: &AnalysisRunSpec,
    status: &AnalysisRunStatus,
    clients: &[MetricClient],
    jobs: &J,
    now: Timestamp,
    at: MeasureAt,
    keep: usize,
) -> Result<Advanced, DriverError> {
    let plan = run::plan(spec, status, now)?;
    let mut status = plan.status;
    let started_at = status.started_at.as_ref().map_or(now, |t| t.0);
    let sequential_metrics = spec
        .metrics
        .iter()
        .filter(|m| m.sequential.is_some() && !m.dry_run)
        .count();
    let mut pending = Vec::with_capacity(plan.due.len());
    for due in &plan.due {
        let (Some(metric), Some(client)) = (spec.metrics.get(due.index), clients.get(due.index))
        else {
            continue;
        };
        let schedule = MetricSchedule::of(due.index, metric)?;
        let result = status.metric_results.iter().find(|r| r.name == metric.name);
        let taken_so_far = result.map_or(0, |r| r.count);
        let prior = result.and_then(|r| r.sequential_state.clone());
        let in_flight = result.and_then(|r| r.in_flight.clone());
        let is_last = schedule.count.is_some_and(|c| taken_so_far + 1 >= c as i32);
        let when = match at {
            MeasureAt::DueTime => due.due_at,
            MeasureAt::Now(now) => now,
        };
        pending.push((
            metric,
            client,
            when,
            prior,
            is_last,
            in_flight,
            taken_so_far + 1,
        ));
    }
    let measurements = pending.iter().map(
        |(metric, client, when, prior, is_last, in_flight, ordinal)| async move {
            let context = RunContext {
                run_started: started_at,
                prior_state: prior.as_ref(),
                is_last: *is_last,
                sequential_metrics,
                keep_watching: spec.background,
            };
            let outcome = take(
                metric,
                client,
                jobs,
                in_flight.as_ref(),
                *ordinal,
                *when,
                context,
            )
            .await;
            (metric.name.clone(), *when, outcome)
        },
    );
    let taken = futures::future::join_all(measurements).await;
    let mut measured = 0;
    for (metric, when, outcome) in taken {
        if status.phase.is_some_and(AnalysisPhase::is_completed) {
            break;
        }
        let measured_now = match outcome {
            Outcome::StillRunning => continue,
            Outcome::Started(in_flight) => {
                tracing::info!(%metric, job = %in_flight.job, "job started");
                run::start_in_flight(&mut status, &metric, in_flight)?;
                measured += 1;
                continue;
            }
            Outcome::Measured(measured_now) => measured_now,
        };
        measured += 1;
        if let Some(result) = status.metric_results.iter_mut().find(|r| r.name == metric) {
            result.sequential_state = measured_now.judge_state.clone();
        }
        tracing::debug!(%metric, phase = ?measured_now.record.phase, "measured");
        run::record(
            spec,
            &mut status,
            &metric,
            measured_now.record,
            measured_now.decisive,
            keep,
            when,
        )?;
    }
    let completed = status.phase.is_some_and(AnalysisPhase::is_completed);
    let in_flight = status.metric_results.iter().any(|r| r.in_flight.is_some());
    let next_at = if completed {
        None
    } else if measured > 0 {
        // Recording may have changed what is due next: plan again.
        let replan = run::plan(spec, &status, now)?;
        let fresh = replan.due.iter().any(|d| {
            status
                .metric_results
                .iter()
                .any(|r| r.name == d.metric && r.in_flight.is_none())
        });
        if fresh {
            Some(now)
        } else {
            replan.next_measurement_at
        }
    } else {
        plan.next_measurement_at
    };
    // A job in flight is checked on again soon.
    let next_at = match (completed, in_flight) {
        (false, true) => {
            let check = run::later(now, job::JOB_CHECK_INTERVAL);
            Some(next_at.map_or(check, |at| at.min(check)))
        }
        _ => next_at,
    };
    Ok(Advanced {
        status,
        next_at,
        measured,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::provider::resolve::NoSecrets;

    struct OneSecret(&'static str);

    impl SecretReader for OneSecret {
        fn read_secret(
            &self,
            _name: &str,
            _key: &str,
            _origin: &Origin,
        ) -> Result<Vec<u8>, String> {
            Ok(self.0.as_bytes().to_vec())
        }
    }

    fn spec_with_secret_arg(query: &str) -> AnalysisRunSpec {
        serde_json::from_value(serde_json::json!({
            "args": [{"name": "tenant", "valueFrom": {"secretKeyRef": {"name": "t", "key": "k"}}},
                     {"name": "window", "value": "5m"}],
            "metrics": [{"name": "m", "successCondition": "result < 1",
                "provider": {"prometheus": {"address": "http://p:9090", "query": query}}}]
        }))
        .expect("spec")
    }

    #[test]
    fn secret_values_are_redacted_in_every_form_they_take() {
        let redactor = Redactor::new(["a\"b c".to_owned(), String::new()]);
        let text = r#"raw a"b c, escaped a\"b c, encoded a%22b+c"#;
        let redacted = redactor.redact(text);
        assert!(
            !redacted.contains("a\"b") && !redacted.contains("a%22b"),
            "{redacted}"
        );
        assert_eq!(redacted.matches(REDACTED).count(), 3, "{redacted}");
        assert!(!format!("{redactor:?}").contains("a\"b"));
    }

    #[test]
    fn a_secret_argument_in_a_regex_matcher_is_redacted_in_its_regex_quoted_form() {
        let spec = spec_with_secret_arg(r#"sum(up{tenant=~"{{args.tenant}}"}[{{args.window}}])"#);
        let prepared = prepare(
            &spec,
            &CommandLinePrometheus::None,
            &OneSecret("acme.corp+eu"),
        )
        .expect("prepare");
        let query = prepared.spec.metrics[0]
            .provider
            .prometheus
            .as_ref()
            .and_then(|p| p.query.clone())
            .unwrap_or_default();
        assert!(query.contains(r"acme\\.corp\\+eu"), "regex-quoted: {query}");
        assert_eq!(
            prepared.redactor.redact(&query),
            r#"sum(up{tenant=~"<redacted>"}[5m])"#
        );
    }

    #[test]
    fn a_secret_argument_is_substituted_in_memory_with_label_escaping() {
        let spec = spec_with_secret_arg(r#"sum(up{tenant="{{args.tenant}}"}[{{args.window}}])"#);
        let prepared = prepare(
            &spec,
            &CommandLinePrometheus::None,
            &OneSecret(r#"x"} or vector(1) or {x=""#),
        )
        .expect("prepare");
        let query = prepared.spec.metrics[0]
            .provider
            .prometheus
            .as_ref()
            .and_then(|p| p.query.clone())
            .unwrap_or_default();
        assert!(query.contains(r#"\"} or vector(1)"#), "escaped: {query}");
        assert!(query.ends_with("[5m])"), "{query}");
        assert_eq!(
            prepared.redactor.redact(&query),
            r#"sum(up{tenant="<redacted>"}[5m])"#
        );
    }

    #[test]
    fn a_secret_argument_outside_a_cluster_is_an_error_naming_the_argument() {
        let spec = spec_with_secret_arg(r#"up{tenant="{{args.tenant}}"}"#);
        let error =
            prepare(&spec, &CommandLinePrometheus::None, &NoSecrets).expect_err("no cluster");
        assert!(error.to_string().starts_with("args[tenant]:"), "{error}");
    }
}

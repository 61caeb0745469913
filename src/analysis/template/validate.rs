//! [`validate_template`]: the checks of an AnalysisTemplate spec.

use std::collections::{BTreeMap, BTreeSet};

use std::time::Duration;

use crate::analysis::provider::{Chosen, chosen};
use crate::analysis::run::{MAX_METRICS_PER_RUN, MAX_NAME_BYTES};
use crate::api::duration::{MAX_DURATION, MAX_QUERY_TIMEOUT, format_duration, parse_duration};
use crate::api::{
    AnalysisTemplateSpec, Argument, EffectSizeMeasure, MannWhitneyJudge, Metric, PrometheusAuth,
    PrometheusProvider, Scoring, SecretSource, SequentialJudge, SequentialTest,
};

use super::Problem;
use super::args::{ArgRef, placeholders};
use super::cel::check_cel;
use super::promql::check_query;
use super::suggest::suggest;

/// Validates an AnalysisTemplate (or ClusterAnalysisTemplate, or a run's copy) spec. Paths start
/// with `spec.`. An empty result means the template is valid.
pub fn validate_template(spec: &AnalysisTemplateSpec) -> Vec<Problem> {
    let mut problems = Vec::new();
    let declared = check_args(&spec.args, "spec.args", &mut problems);
    if spec.metrics.is_empty() {
        problems.push(Problem::new(
            "spec.metrics",
            "no metrics: a template needs at least one",
        ));
    }
    if spec.metrics.len() > MAX_METRICS_PER_RUN {
        problems.push(Problem::new(
            "spec.metrics",
            format!(
                "{} metrics: a run holds at most {MAX_METRICS_PER_RUN} (MAX_METRICS_PER_RUN), so its status stays within its size budget",
                spec.metrics.len()
            ),
        ));
    }
    let mut names: BTreeMap<&str, usize> = BTreeMap::new();
    let mut has_mann_whitney = false;
    let mut groups = BTreeSet::new();
    for (i, metric) in spec.metrics.iter().enumerate() {
        let path = format!("spec.metrics[{i}]");
        if metric.name.trim().is_empty() {
            problems.push(Problem::new(
                format!("{path}.name"),
                "empty name: every metric needs a name, unique within the template",
            ));
        } else if metric.name.len() > MAX_NAME_BYTES {
            problems.push(Problem::new(
                format!("{path}.name"),
                format!(
                    "{} bytes long: a metric name is at most {MAX_NAME_BYTES} bytes (MAX_NAME_BYTES)",
                    metric.name.len()
                ),
            ));
        } else if let Some(first) = names.insert(&metric.name, i) {
            problems.push(Problem::new(
                format!("{path}.name"),
                format!(
                    "`{}` is also the name of spec.metrics[{first}]; metric names must be unique",
                    metric.name
                ),
            ));
            names.insert(&metric.name, first);
        }
        if let Some(mw) = &metric.mann_whitney {
            has_mann_whitney = true;
            groups.insert(mw.group.clone().unwrap_or_else(|| metric.name.clone()));
        }
        check_metric(metric, &path, &declared, &spec.args, &mut problems);
    }
    if let Some(scoring) = &spec.scoring {
        let path = "spec.scoring";
        if !has_mann_whitney {
            problems.push(Problem::new(
                path,
                "scoring is only used by mannWhitney metrics, and this template has none",
            ));
        }
        let marginal = scoring
            .marginal_threshold
            .unwrap_or(Scoring::DEFAULT_MARGINAL_THRESHOLD);
        let pass = scoring
            .pass_threshold
            .unwrap_or(Scoring::DEFAULT_PASS_THRESHOLD);
        for (field, value) in [
            ("marginalThreshold", scoring.marginal_threshold),
            ("passThreshold", scoring.pass_threshold),
        ] {
            if let Some(v) = value
                && !(0.0..=100.0).contains(&v)
            {
                problems.push(Problem::new(
                    format!("{path}.{field}"),
                    format!("{v} is not in 0..=100 (a score out of 100)"),
                ));
            }
        }
        if marginal > pass {
            problems.push(Problem::new(
                format!("{path}.marginalThreshold"),
                format!("{marginal} is above passThreshold {pass}; marginal must be <= pass"),
            ));
        }
        for (group, weight) in &scoring.group_weights {
            let field = format!("{path}.groupWeights.{group}");
            if !weight.is_finite() || *weight < 0.0 {
                problems.push(Problem::new(
                    field.clone(),
                    format!("{weight} is not a weight >= 0"),
                ));
            }
            if has_mann_whitney && !groups.contains(group) {
                problems.push(Problem::new(
                    field,
                    format!(
                        "no mannWhitney metric is in group `{group}` (groups: {})",
                        groups.iter().cloned().collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
        }
    }
    problems
}

/// Checks argument declarations; returns the declared names.
pub(crate) fn check_args(
    args: &[Argument],
    path: &str,
    problems: &mut Vec<Problem>,
) -> BTreeSet<String> {
    let mut declared = BTreeSet::new();
    for (i, arg) in args.iter().enumerate() {
        let here = format!("{path}[{i}]");
        if arg.name.is_empty() {
            problems.push(Problem::new(format!("{here}.name"), "empty argument name"));
        } else if !arg
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            problems.push(Problem::new(
                format!("{here}.name"),
                format!(
                    "`{}`: an argument name has only letters, digits, `_` and `-` (it is used as {{{{args.NAME}}}})",
                    arg.name
                ),
            ));
        } else if !declared.insert(arg.name.clone()) {
            problems.push(Problem::new(
                format!("{here}.name"),
                format!("argument `{}` is declared twice", arg.name),
            ));
        }
        if arg.value.is_some() && arg.value_from.is_some() {
            problems.push(Problem::new(
                here.clone(),
                "both `value` and `valueFrom` are set; keep one",
            ));
        }
        if let Some(from) = &arg.value_from {
            match (&from.secret_key_ref, &from.field_ref) {
                (Some(_), Some(_)) => problems.push(Problem::new(
                    format!("{here}.valueFrom"),
                    "both `secretKeyRef` and `fieldRef` are set; keep one",
                )),
                (None, None) => problems.push(Problem::new(
                    format!("{here}.valueFrom"),
                    "empty: set `secretKeyRef` or `fieldRef`",
                )),
                (Some(s), None) => {
                    if s.name.is_empty() || s.key.is_empty() {
                        problems.push(Problem::new(
                            format!("{here}.valueFrom.secretKeyRef"),
                            "needs both `name` and `key`",
                        ));
                    }
                }
                (None, Some(f)) => {
                    if f.field_path.is_empty() {
                        problems.push(Problem::new(
                            format!("{here}.valueFrom.fieldRef.fieldPath"),
                            "empty field path",
                        ));
                    }
                }
            }
        }
    }
    declared
}

/// Checks a duration field: it parses and is at most [`MAX_DURATION`].
pub(crate) fn check_duration(value: Option<&str>, path: String, problems: &mut Vec<Problem>) {
    check_duration_up_to(value, path, MAX_DURATION, "MAX_DURATION", problems);
}

/// Checks a duration field: it parses and is at most `ceiling` (the const named `name`).
fn check_duration_up_to(
    value: Option<&str>,
    path: String,
    ceiling: Duration,
    name: &str,
    problems: &mut Vec<Problem>,
) {
    let Some(text) = value else { return };
    match parse_duration(text) {
        Err(error) => problems.push(Problem::new(path, format!("{error}"))),
        Ok(duration) if duration > ceiling => problems.push(Problem::new(
            path,
            format!(
                "{text:?} is longer than the ceiling of {} ({name}); write a duration of at most {}",
                format_duration(ceiling),
                format_duration(ceiling)
            ),
        )),
        Ok(_) => {}
    }
}

/// The fewest measurements a sequential `errorCounts` metric needs to ever decide: the test
/// tempers for overdispersion and counts no evidence before three intervals with errors
/// (`DISPERSION_MIN_INTERVALS` in `analysis::judge::sequential`), so a smaller `count` ends
/// every run Inconclusive, whatever the canary does.
const SEQUENTIAL_ERROR_COUNTS_MIN_COUNT: i32 = 3;

/// Which judge a metric uses.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Judge {
    Threshold,
    MannWhitney,
    Sequential(SequentialTest),
}

fn check_metric(
    metric: &Metric,
    path: &str,
    declared: &BTreeSet<String>,
    args: &[Argument],
    problems: &mut Vec<Problem>,
) {
    check_duration(
        metric.interval.as_deref(),
        format!("{path}.interval"),
        problems,
    );
    if let Some(interval) = metric.interval.as_deref()
        && parse_duration(interval).is_ok_and(|d| d.is_zero())
    {
        problems.push(Problem::new(
            format!("{path}.interval"),
            "0s: the interval between measurements must be positive",
        ));
    }
    check_duration(
        metric.initial_delay.as_deref(),
        format!("{path}.initialDelay"),
        problems,
    );
    check_limits(metric, path, problems);
    let provider = match chosen(&metric.provider) {
        Ok(provider) => Some(provider),
        Err(error) => {
            problems.push(Problem::new(format!("{path}.provider"), error.to_string()));
            None
        }
    };
    if let Some(Chosen::Job(job)) = provider {
        super::validate_job::check_job_metric(metric, job, path, declared, problems);
        return;
    }

    let judge = check_judge(metric, path, problems);
    if judge == Some(Judge::Sequential(SequentialTest::ErrorCounts))
        && let Some(count) = metric.count
        && (1..SEQUENTIAL_ERROR_COUNTS_MIN_COUNT).contains(&count)
    {
        problems.push(Problem::new(
            format!("{path}.count"),
            format!(
                "{count}: the sequential errorCounts test weighs no evidence before {SEQUENTIAL_ERROR_COUNTS_MIN_COUNT} intervals with errors, so with fewer measurements it can never fail (or pass early); use count >= {SEQUENTIAL_ERROR_COUNTS_MIN_COUNT} or leave it out"
            ),
        ));
    }

    match provider {
        Some(Chosen::Prometheus(prom)) => {
            check_prometheus(prom, judge, path, declared, args, problems)
        }
        Some(Chosen::Web(web)) => {
            if matches!(judge, Some(Judge::MannWhitney | Judge::Sequential(_))) {
                problems.push(Problem::new(
                    path.to_owned(),
                    "a web metric is judged by successCondition/failureCondition; mannWhitney and sequential compare Prometheus queries",
                ));
            }
            super::web::check_web(web, &format!("{path}.provider.web"), declared, problems);
        }
        Some(Chosen::Job(_)) | None => {}
    }
}

fn check_limits(metric: &Metric, path: &str, problems: &mut Vec<Problem>) {
    if let Some(count) = metric.count
        && count < 1
    {
        problems.push(Problem::new(
            format!("{path}.count"),
            format!(
                "{count}: count must be at least 1 (leave it out to measure until the run stops)"
            ),
        ));
    }
    if metric.count.is_some_and(|c| c > 1) && metric.interval.is_none() {
        problems.push(Problem::new(
            format!("{path}.count"),
            format!(
                "{} measurements need an `interval` between them",
                metric.count.unwrap_or_default()
            ),
        ));
    }
    for (field, value) in [
        ("failureLimit", metric.failure_limit),
        ("inconclusiveLimit", metric.inconclusive_limit),
        ("consecutiveErrorLimit", metric.consecutive_error_limit),
    ] {
        if let Some(v) = value
            && v < 0
        {
            problems.push(Problem::new(
                format!("{path}.{field}"),
                format!("{v} is negative; a limit is a number of measurements >= 0"),
            ));
        }
    }
    // Without count, a metric with an interval measures until the run stops: no upper bound.
    let effective_count = match (metric.count, &metric.interval) {
        (Some(c), _) => Some(c),
        (None, None) => Some(1),
        (None, Some(_)) => None,
    };
    if let Some(count) = effective_count.filter(|c| *c >= 1) {
        if let Some(limit) = metric.failure_limit
            && limit >= count
        {
            problems.push(Problem::new(
                format!("{path}.failureLimit"),
                format!(
                    "{limit} >= count {count}: the metric fails when more than {limit} of {count} measurements fail, so it can never fail"
                ),
            ));
        }
        if let Some(limit) = metric.inconclusive_limit
            && limit >= count
        {
            problems.push(Problem::new(
                format!("{path}.inconclusiveLimit"),
                format!(
                    "{limit} >= count {count}: the metric can never be Inconclusive, so measurements that could not decide would count for nothing"
                ),
            ));
        }
    }
}

/// Checks that a metric has exactly one judge, then that judge's settings.
fn check_judge(metric: &Metric, path: &str, problems: &mut Vec<Problem>) -> Option<Judge> {
    let threshold = metric.success_condition.is_some() || metric.failure_condition.is_some();
    let kinds: Vec<&str> = [
        ("successCondition/failureCondition", threshold),
        ("mannWhitney", metric.mann_whitney.is_some()),
        ("sequential", metric.sequential.is_some()),
    ]
    .into_iter()
    .filter_map(|(kind, present)| present.then_some(kind))
    .collect();
    match kinds.len() {
        0 => {
            problems.push(Problem::new(
                path.to_owned(),
                "no judge: set successCondition and/or failureCondition, mannWhitney or sequential (a metric without a judge would pass silently)",
            ));
            return None;
        }
        1 => {}
        _ => {
            problems.push(Problem::new(
                path.to_owned(),
                format!(
                    "several judges ({}); a metric has exactly one",
                    kinds.join(", ")
                ),
            ));
            return None;
        }
    }
    if threshold {
        check_threshold(metric, path, problems);
        return Some(Judge::Threshold);
    }
    if let Some(mw) = &metric.mann_whitney {
        check_mann_whitney(mw, &format!("{path}.mannWhitney"), problems);
        return Some(Judge::MannWhitney);
    }
    if let Some(seq) = &metric.sequential {
        let test = check_sequential(seq, &format!("{path}.sequential"), problems);
        return Some(Judge::Sequential(test));
    }
    None
}

/// The threshold judge: each CEL condition set.
fn check_threshold(metric: &Metric, path: &str, problems: &mut Vec<Problem>) {
    for (field, condition) in [
        ("successCondition", &metric.success_condition),
        ("failureCondition", &metric.failure_condition),
    ] {
        if let Some(source) = condition {
            check_cel(source, field, &format!("{path}.{field}"), problems);
        }
    }
}

/// The mannWhitney judge: confidence, margins, outlier factor and step.
fn check_mann_whitney(mw: &MannWhitneyJudge, here: &str, problems: &mut Vec<Problem>) {
    if let Some(c) = mw.confidence
        && !(c > 0.0 && c < 1.0)
    {
        problems.push(Problem::new(
            format!("{here}.confidence"),
            format!("{c} is not in (0, 1), e.g. 0.98"),
        ));
    }
    let margins = [
        ("allowedIncrease", mw.allowed_increase),
        ("allowedDecrease", mw.allowed_decrease),
        ("criticalIncrease", mw.critical_increase),
        ("criticalDecrease", mw.critical_decrease),
    ];
    for (field, value) in std::iter::once(("tolerance", mw.tolerance)).chain(margins) {
        if let Some(v) = value
            && !(v.is_finite() && v >= 0.0)
        {
            problems.push(Problem::new(
                format!("{here}.{field}"),
                format!("{v} is not a number >= 0"),
            ));
        }
    }
    if mw.effect_size_measure == Some(EffectSizeMeasure::Cles) {
        for (field, value) in margins {
            if let Some(v) = value
                && v > 1.0
            {
                problems.push(Problem::new(
                    format!("{here}.{field}"),
                    format!("{v} is above 1, but the `cles` effect size is a probability in 0..=1"),
                ));
            }
        }
    }
    if let Some(f) = mw.outlier_factor
        && !(f.is_finite() && f > 0.0)
    {
        problems.push(Problem::new(
            format!("{here}.outlierFactor"),
            format!("{f} is not a number > 0, e.g. 3.0"),
        ));
    }
    check_duration(mw.step.as_deref(), format!("{here}.step"), problems);
    if let Some(step) = mw.step.as_deref()
        && parse_duration(step).is_ok_and(|d| d.is_zero())
    {
        problems.push(Problem::new(
            format!("{here}.step"),
            "0s: the step between samples must be positive",
        ));
    }
}

/// Longest label name `stratifyBy` may give.
const MAX_LABEL_NAME_BYTES: usize = 128;

/// `stratifyBy`: a Prometheus label name, for the errorCounts test only.
fn check_stratify_by(label: &str, test: SequentialTest, here: &str, problems: &mut Vec<Problem>) {
    let field = format!("{here}.stratifyBy");
    let mut chars = label.chars();
    let valid = label.len() <= MAX_LABEL_NAME_BYTES
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        problems.push(Problem::new(
            field.clone(),
            format!(
                "{:?} is not a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*, at most {MAX_LABEL_NAME_BYTES} bytes), e.g. pod",
                crate::analysis::provider::bounded(label)
            ),
        ));
    }
    if test == SequentialTest::Latency {
        problems.push(Problem::new(
            field,
            "only used by `test: errorCounts`; the latency test compares the arms' totals",
        ));
    }
}

/// The sequential judge: alpha, margins and the test's own settings; returns the test.
fn check_sequential(
    seq: &SequentialJudge,
    here: &str,
    problems: &mut Vec<Problem>,
) -> SequentialTest {
    if let Some(a) = seq.alpha
        && !(a > 0.0 && a < 1.0)
    {
        problems.push(Problem::new(
            format!("{here}.alpha"),
            format!("{a} is not in (0, 1), e.g. 0.01"),
        ));
    }
    for (field, value) in [
        ("failMargin", seq.fail_margin),
        ("passMargin", seq.pass_margin),
    ] {
        if let Some(v) = value
            && !(v.is_finite() && v >= 0.0)
        {
            problems.push(Problem::new(
                format!("{here}.{field}"),
                format!("{v} is not a number >= 0"),
            ));
        }
    }
    let test = seq.test.unwrap_or_default();
    if let Some(label) = &seq.stratify_by {
        check_stratify_by(label, test, here, problems);
    }
    match (test, seq.slow_threshold_seconds) {
        (SequentialTest::Latency, None) => problems.push(Problem::new(
            format!("{here}.slowThresholdSeconds"),
            "the latency test needs the bucket boundary (seconds) above which a request is slow, e.g. 0.5",
        )),
        (SequentialTest::Latency, Some(s)) if !(s.is_finite() && s > 0.0) => {
            problems.push(Problem::new(
                format!("{here}.slowThresholdSeconds"),
                format!("{s} is not a number of seconds > 0"),
            ));
        }
        (SequentialTest::ErrorCounts, Some(_)) => problems.push(Problem::new(
            format!("{here}.slowThresholdSeconds"),
            "only used by `test: latency`; the errorCounts test ignores it",
        )),
        _ => {}
    }
    test
}

fn check_prometheus(
    prom: &PrometheusProvider,
    judge: Option<Judge>,
    path: &str,
    declared: &BTreeSet<String>,
    args: &[Argument],
    problems: &mut Vec<Problem>,
) {
    let here = format!("{path}.provider.prometheus");
    if let Some(address) = &prom.address {
        check_address(address, &format!("{here}.address"), declared, problems);
    }
    check_duration_up_to(
        prom.timeout.as_deref(),
        format!("{here}.timeout"),
        MAX_QUERY_TIMEOUT,
        "MAX_QUERY_TIMEOUT",
        problems,
    );
    if let Some(timeout) = prom.timeout.as_deref()
        && parse_duration(timeout).is_ok_and(|d| d.is_zero())
    {
        problems.push(Problem::new(
            format!("{here}.timeout"),
            "0s: a query needs time to answer",
        ));
    }
    if let Some(auth) = &prom.auth {
        check_auth(auth, &format!("{here}.auth"), problems);
    }

    let queries = [
        ("query", &prom.query),
        ("canaryQuery", &prom.canary_query),
        ("baselineQuery", &prom.baseline_query),
        ("canaryRequestsQuery", &prom.canary_requests_query),
        ("baselineRequestsQuery", &prom.baseline_requests_query),
    ];
    if let Some(judge) = judge {
        let (needed, label): (&[&str], &str) = match judge {
            Judge::Threshold => (
                &["query"],
                "the threshold judge (successCondition/failureCondition)",
            ),
            Judge::MannWhitney => (&["canaryQuery", "baselineQuery"], "the mannWhitney judge"),
            Judge::Sequential(SequentialTest::ErrorCounts) => (
                &[
                    "canaryQuery",
                    "baselineQuery",
                    "canaryRequestsQuery",
                    "baselineRequestsQuery",
                ],
                "the sequential errorCounts test",
            ),
            Judge::Sequential(SequentialTest::Latency) => (
                &["canaryQuery", "baselineQuery"],
                "the sequential latency test",
            ),
        };
        for (field, query) in &queries {
            let wanted = needed.contains(field);
            match (wanted, query) {
                (true, None) => problems.push(Problem::new(
                    format!("{here}.{field}"),
                    format!("missing: {label} needs it"),
                )),
                (false, Some(_)) => problems.push(Problem::new(
                    format!("{here}.{field}"),
                    format!("not used by {label}; remove it"),
                )),
                _ => {}
            }
        }
    }
    for (field, query) in &queries {
        if let Some(query) = query {
            check_query(query, &format!("{here}.{field}"), declared, args, problems);
        }
    }
}

/// Checks a provider's `auth` (at `auth_path`): each secret source names one place, one
/// Authorization scheme, each header one value.
pub(super) fn check_auth(auth: &PrometheusAuth, auth_path: &str, problems: &mut Vec<Problem>) {
    let auth_path = auth_path.to_owned();
    if let Some(token) = &auth.bearer_token {
        check_secret_source(token, &format!("{auth_path}.bearerToken"), problems);
    }
    if let Some(basic) = &auth.basic {
        check_secret_source(
            &basic.password,
            &format!("{auth_path}.basic.password"),
            problems,
        );
    }
    if let Some(ca) = &auth.ca_bundle {
        check_secret_source(ca, &format!("{auth_path}.caBundle"), problems);
    }
    if auth.bearer_token.is_some() && auth.basic.is_some() {
        problems.push(Problem::new(
            auth_path.clone(),
            "both `bearerToken` and `basic` are set; a request carries one Authorization header",
        ));
    }
    for (i, header) in auth.headers.iter().enumerate() {
        let header_path = format!("{auth_path}.headers[{i}]");
        match (&header.value, &header.value_from) {
            (Some(_), Some(_)) => problems.push(Problem::new(
                header_path,
                "both `value` and `valueFrom` are set; keep one",
            )),
            (None, None) => problems.push(Problem::new(
                header_path,
                "no value: set `value` or `valueFrom`",
            )),
            (None, Some(from)) => {
                check_secret_source(from, &format!("{header_path}.valueFrom"), problems)
            }
            _ => {}
        }
    }
}

fn check_secret_source(source: &SecretSource, path: &str, problems: &mut Vec<Problem>) {
    match (&source.secret_key_ref, &source.file) {
        (Some(_), Some(_)) => problems.push(Problem::new(
            path.to_owned(),
            "both `secretKeyRef` and `file` are set; keep one",
        )),
        (None, None) => problems.push(Problem::new(
            path.to_owned(),
            "empty: set `secretKeyRef` or `file`",
        )),
        _ => {}
    }
}

fn check_address(
    address: &str,
    path: &str,
    declared: &BTreeSet<String>,
    problems: &mut Vec<Problem>,
) {
    match placeholders(address) {
        Err(error) => {
            problems.push(Problem::new(path.to_owned(), error.to_string()));
            return;
        }
        Ok(refs) if !refs.is_empty() => {
            check_declared(&refs, path, declared, problems);
            return;
        }
        Ok(_) => {}
    }
    match url::Url::parse(address) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {}
        Ok(url) => problems.push(Problem::new(
            path.to_owned(),
            format!(
                "`{address}`: expected an http:// or https:// URL with a host, found scheme `{}`",
                url.scheme()
            ),
        )),
        Err(error) => problems.push(Problem::new(
            path.to_owned(),
            format!("`{address}` is not a URL ({error}); e.g. http://prometheus.monitoring:9090"),
        )),
    }
}

pub(super) fn check_declared(
    refs: &[ArgRef],
    path: &str,
    declared: &BTreeSet<String>,
    problems: &mut Vec<Problem>,
) {
    let mut seen = BTreeSet::new();
    for r in refs {
        if !declared.contains(&r.name) && seen.insert(&r.name) {
            problems.push(Problem::new(
                path.to_owned(),
                format!(
                    "`{{{{args.{}}}}}` is not declared in spec.args{}",
                    r.name,
                    suggest(&r.name, declared.iter().map(String::as_str))
                        .map(|s| format!(" (did you mean `{s}`?)"))
                        .unwrap_or_default()
                ),
            ));
        }
    }
}

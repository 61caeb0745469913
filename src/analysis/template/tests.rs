use std::collections::BTreeMap;

use promql_parser::parser::Expr;

use super::promql::selectors;
use super::*;
use crate::api::{
    AnalysisTemplateSpec, Argument, MannWhitneyJudge, Metric, MetricProvider, PrometheusProvider,
    Scoring, SequentialJudge, SequentialTest,
};

fn arg(name: &str, value: Option<&str>) -> Argument {
    Argument {
        name: name.to_owned(),
        value: value.map(str::to_owned),
        value_from: None,
    }
}

fn args(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn threshold_metric(name: &str, query: &str, condition: &str) -> Metric {
    Metric {
        name: name.to_owned(),
        provider: MetricProvider {
            job: None,
            prometheus: Some(PrometheusProvider {
                address: Some("http://prometheus:9090".to_owned()),
                query: Some(query.to_owned()),
                ..Default::default()
            }),
            web: None,
        },
        success_condition: Some(condition.to_owned()),
        ..Default::default()
    }
}

fn template(metrics: Vec<Metric>) -> AnalysisTemplateSpec {
    AnalysisTemplateSpec {
        args: vec![arg("service", None)],
        metrics,
        scoring: None,
    }
}

/// The messages of the problems at `path`.
fn at(problems: &[Problem], path: &str) -> Vec<String> {
    problems
        .iter()
        .filter(|p| p.path == path)
        .map(|p| p.message.clone())
        .collect()
}

const GOOD_QUERY: &str = r#"sum(rate(http_requests_total{service="{{args.service}}",code=~"5.."}[5m])) / sum(rate(http_requests_total{service="{{args.service}}"}[5m]))"#;

// --- placeholders ---------------------------------------------------------------------------

#[test]
fn placeholders_finds_each_with_offsets_and_tolerates_spaces() {
    let query = r#"a{x="{{args.one}}"} + b{y="{{ args.two-words }}"}"#;
    let found = placeholders(query).expect("valid");
    assert_eq!(
        found.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        ["one", "two-words"]
    );
    assert_eq!(&query[found[0].start..found[0].end], "{{args.one}}");
    assert_eq!(&query[found[1].start..found[1].end], "{{ args.two-words }}");
}

#[test]
fn placeholders_rejects_malformed_ones_with_a_position() {
    assert!(matches!(
        placeholders("a{x=\"{{args.}}\"}"),
        Err(TemplateError::ParsePlaceholder { at: 5, reason }) if reason.contains("names no argument")
    ));
    assert!(matches!(
        placeholders("a{x=\"{{args.x\"}"),
        Err(TemplateError::ParsePlaceholder { at: 5, reason }) if reason.contains("never closed")
    ));
    assert!(matches!(
        placeholders("{{ owner }}"),
        Err(TemplateError::ParsePlaceholder { reason, .. }) if reason.contains("{{args.NAME}}")
    ));
    // Flagger's variables are named as such, with the argument to write instead.
    assert!(matches!(
        placeholders("{{ service }}"),
        Err(TemplateError::ParsePlaceholder { reason, .. })
            if reason.contains("Flagger's `{{ service }}`") && reason.contains("{{args.service}}")
    ));
    assert!(matches!(
        placeholders("{{args.a b}}"),
        Err(TemplateError::ParsePlaceholder { .. })
    ));
}

#[test]
fn placeholders_of_a_plain_query_is_empty() {
    assert_eq!(placeholders("sum(rate(x[5m]))"), Ok(vec![]));
}

// --- resolve_args ---------------------------------------------------------------------------

#[test]
fn resolve_args_prefers_given_values_over_defaults() {
    let declared = [arg("service", None), arg("window", Some("5m"))];
    let given = [arg("service", Some("web")), arg("unrelated", Some("x"))];
    let resolved = resolve_args(&declared, &given).expect("resolves");
    assert_eq!(resolved, args(&[("service", "web"), ("window", "5m")]));

    let given = [arg("service", Some("web")), arg("window", Some("1m"))];
    let resolved = resolve_args(&declared, &given).expect("resolves");
    assert_eq!(resolved["window"], "1m");
}

#[test]
fn resolve_args_names_a_missing_argument() {
    let declared = [arg("service", None)];
    assert_eq!(
        resolve_args(&declared, &[]),
        Err(TemplateError::ResolveArg {
            name: "service".to_owned()
        })
    );
}

#[test]
fn resolve_args_leaves_value_from_to_the_caller() {
    let mut from = arg("token", None);
    from.value_from = Some(Default::default());
    assert_eq!(
        resolve_args(std::slice::from_ref(&from), &[]),
        Err(TemplateError::ResolveArgValueFrom {
            name: "token".to_owned()
        })
    );
    // The caller resolved it and passes the value.
    let resolved = resolve_args(&[from], &[arg("token", Some("s3cret"))]).expect("resolves");
    assert_eq!(resolved["token"], "s3cret");
}

// --- substitute -----------------------------------------------------------------------------

#[test]
fn substitute_fills_strings_and_bare_tokens() {
    let query = r#"histogram_quantile({{args.q}}, sum by (le) (rate(x_bucket{svc="{{ args.service }}"}[{{args.window}}])))"#;
    let out = substitute(
        query,
        &args(&[("q", "0.95"), ("service", "web"), ("window", "5m")]),
    )
    .expect("substitutes");
    assert_eq!(
        out,
        r#"histogram_quantile(0.95, sum by (le) (rate(x_bucket{svc="web"}[5m])))"#
    );
}

#[test]
fn substitute_escapes_label_values() {
    let out = substitute(
        r#"x{a="{{args.v}}"}"#,
        &args(&[("v", "back\\slash \"quoted\"\nline")]),
    )
    .expect("substitutes");
    assert_eq!(out, r#"x{a="back\\slash \"quoted\"\nline"}"#);
    let parsed = promql_parser::parser::parse(&out).expect("parses");
    let Expr::VectorSelector(v) = parsed else {
        panic!("a selector, got {parsed:?}")
    };
    let matcher = v.matchers.matchers.iter().find(|m| m.name == "a");
    assert_eq!(
        matcher.map(|m| m.value.as_str()),
        Some("back\\slash \"quoted\"\nline")
    );
}

#[test]
fn an_injected_value_cannot_change_the_query() {
    let attack = r#"web"} or vector(1) or {x=""#;
    let out = substitute(GOOD_QUERY, &args(&[("service", attack)])).expect("escaped, not rejected");
    let neutral = substitute(GOOD_QUERY, &args(&[("service", "web")])).expect("plain");
    let parsed = promql_parser::parser::parse(&out).expect("still parses");
    let plain = promql_parser::parser::parse(&neutral).expect("parses");
    assert_eq!(shape(&parsed), shape(&plain));
    assert!(!shape(&parsed).contains("vector"), "{}", shape(&parsed));
    // The whole attack string ends up as the label value.
    let values: Vec<String> = selectors(&parsed)
        .iter()
        .flat_map(|v| v.matchers.matchers.iter())
        .filter(|m| m.name == "service")
        .map(|m| m.value.clone())
        .collect();
    assert_eq!(values, [attack, attack]);
}

#[test]
fn an_injected_value_in_a_single_quoted_string_is_escaped_too() {
    let query = "x{a='{{args.v}}'}";
    let out = substitute(query, &args(&[("v", "a'} or vector(1) or x{b='")])).expect("escaped");
    let parsed = promql_parser::parser::parse(&out).expect("parses");
    assert!(matches!(parsed, Expr::VectorSelector(_)), "{out}");
}

#[test]
fn a_bare_value_must_be_a_plain_token() {
    let query = "sum(rate(x[{{args.window}}]))";
    assert!(substitute(query, &args(&[("window", "5m")])).is_ok());
    let err = substitute(query, &args(&[("window", "5m])) or vector(1) #")])).unwrap_err();
    assert!(
        matches!(&err, TemplateError::SubstituteArg { name, reason } if name == "window" && reason.contains("outside a quoted string")),
        "{err}"
    );
    let err = substitute("{{args.op}}(x)", &args(&[("op", "sum")])).unwrap_err();
    assert!(
        matches!(err, TemplateError::SubstituteArg { reason, .. } if reason.contains("keyword"))
    );
    // Glued to other identifier characters a keyword is just part of a name.
    assert_eq!(
        substitute("http_{{args.kind}}_total", &args(&[("kind", "sum")])),
        Ok("http_sum_total".to_owned())
    );
    assert!(substitute("x[{{args.w}}]", &args(&[("w", "")])).is_err());
}

#[test]
fn a_raw_string_refuses_a_backtick() {
    assert!(substitute("x{a=`{{args.v}}`}", &args(&[("v", "ok")])).is_ok());
    assert!(substitute("x{a=`{{args.v}}`}", &args(&[("v", "a`} or vector(1)")])).is_err());
}

#[test]
fn substitute_needs_every_value() {
    assert!(matches!(
        substitute(GOOD_QUERY, &BTreeMap::new()),
        Err(TemplateError::SubstituteArg { name, .. }) if name == "service"
    ));
}

// --- validate_template ----------------------------------------------------------------------

#[test]
fn a_good_template_has_no_problems() {
    let spec = template(vec![threshold_metric(
        "errors",
        GOOD_QUERY,
        "result < 0.01",
    )]);
    assert_eq!(validate_template(&spec), vec![]);
}

#[test]
fn duplicate_and_empty_metric_names() {
    let spec = template(vec![
        threshold_metric("errors", GOOD_QUERY, "result < 0.01"),
        threshold_metric("errors", GOOD_QUERY, "result < 0.01"),
        threshold_metric("", GOOD_QUERY, "result < 0.01"),
    ]);
    let problems = validate_template(&spec);
    assert_eq!(
        at(&problems, "spec.metrics[1].name"),
        ["`errors` is also the name of spec.metrics[0]; metric names must be unique"]
    );
    assert_eq!(at(&problems, "spec.metrics[2].name").len(), 1);
}

#[test]
fn durations_must_parse() {
    let mut metric = threshold_metric("errors", GOOD_QUERY, "result < 0.01");
    metric.interval = Some("5d".to_owned());
    metric.initial_delay = Some("soon".to_owned());
    let problems = validate_template(&template(vec![metric]));
    assert_eq!(
        at(&problems, "spec.metrics[0].interval"),
        [r#""5d": unknown unit "d" (use ms, s, m or h)"#]
    );
    assert_eq!(at(&problems, "spec.metrics[0].initialDelay").len(), 1);
}

#[test]
fn limits_relative_to_count() {
    let mut metric = threshold_metric("errors", GOOD_QUERY, "result < 0.01");
    metric.interval = Some("1m".to_owned());
    metric.count = Some(3);
    metric.failure_limit = Some(3);
    metric.inconclusive_limit = Some(2);
    let problems = validate_template(&template(vec![metric.clone()]));
    assert_eq!(at(&problems, "spec.metrics[0].failureLimit").len(), 1);
    assert!(at(&problems, "spec.metrics[0].failureLimit")[0].contains("can never fail"));
    assert!(at(&problems, "spec.metrics[0].inconclusiveLimit").is_empty());

    metric.failure_limit = Some(2);
    assert_eq!(validate_template(&template(vec![metric.clone()])), vec![]);

    metric.count = Some(0);
    let problems = validate_template(&template(vec![metric.clone()]));
    assert!(!at(&problems, "spec.metrics[0].count").is_empty());

    // Without interval and count there is one measurement: failureLimit 1 can never fail.
    let mut once = threshold_metric("once", GOOD_QUERY, "result < 0.01");
    once.failure_limit = Some(1);
    let problems = validate_template(&template(vec![once.clone()]));
    assert_eq!(at(&problems, "spec.metrics[0].failureLimit").len(), 1);
    // With an interval and no count it measures until stopped: no bound to compare with.
    once.interval = Some("1m".to_owned());
    assert_eq!(validate_template(&template(vec![once])), vec![]);

    let mut no_interval = threshold_metric("x", GOOD_QUERY, "result < 0.01");
    no_interval.count = Some(3);
    let problems = validate_template(&template(vec![no_interval]));
    assert!(at(&problems, "spec.metrics[0].count")[0].contains("interval"));
}

#[test]
fn a_metric_without_a_judge_is_a_problem_not_a_silent_pass() {
    let mut metric = threshold_metric("errors", GOOD_QUERY, "result < 0.01");
    metric.success_condition = None;
    let problems = validate_template(&template(vec![metric]));
    assert_eq!(at(&problems, "spec.metrics[0]").len(), 1);
    assert!(at(&problems, "spec.metrics[0]")[0].starts_with("no judge"));
}

#[test]
fn several_judges_are_a_problem() {
    let mut metric = threshold_metric("errors", GOOD_QUERY, "result < 0.01");
    metric.mann_whitney = Some(MannWhitneyJudge::default());
    let problems = validate_template(&template(vec![metric]));
    assert!(at(&problems, "spec.metrics[0]")[0].contains("several judges"));
}

#[test]
fn each_judge_needs_its_queries() {
    let mut metric = threshold_metric("latency", GOOD_QUERY, "result < 0.01");
    metric.success_condition = None;
    metric.mann_whitney = Some(MannWhitneyJudge::default());
    let problems = validate_template(&template(vec![metric.clone()]));
    let p = "spec.metrics[0].provider.prometheus";
    assert_eq!(at(&problems, &format!("{p}.canaryQuery")).len(), 1);
    assert_eq!(at(&problems, &format!("{p}.baselineQuery")).len(), 1);
    assert!(at(&problems, &format!("{p}.query"))[0].contains("not used"));

    metric.mann_whitney = None;
    metric.sequential = Some(SequentialJudge::default());
    let prom = metric.provider.prometheus.as_mut().expect("set");
    prom.query = None;
    prom.canary_query = Some(GOOD_QUERY.to_owned());
    prom.baseline_query = Some(GOOD_QUERY.to_owned());
    let problems = validate_template(&template(vec![metric.clone()]));
    assert_eq!(at(&problems, &format!("{p}.canaryRequestsQuery")).len(), 1);
    assert_eq!(
        at(&problems, &format!("{p}.baselineRequestsQuery")).len(),
        1
    );

    metric.sequential = Some(SequentialJudge {
        test: Some(SequentialTest::Latency),
        ..Default::default()
    });
    let problems = validate_template(&template(vec![metric]));
    assert_eq!(
        at(&problems, "spec.metrics[0].sequential.slowThresholdSeconds").len(),
        1
    );
}

#[test]
fn judge_parameters_in_range() {
    let mut metric = threshold_metric("m", GOOD_QUERY, "true");
    metric.success_condition = None;
    let prom = metric.provider.prometheus.as_mut().expect("set");
    prom.query = None;
    prom.canary_query = Some(GOOD_QUERY.to_owned());
    prom.baseline_query = Some(GOOD_QUERY.to_owned());
    metric.mann_whitney = Some(MannWhitneyJudge {
        confidence: Some(1.0),
        tolerance: Some(-0.1),
        outlier_factor: Some(0.0),
        ..Default::default()
    });
    let problems = validate_template(&template(vec![metric.clone()]));
    let p = "spec.metrics[0].mannWhitney";
    assert_eq!(at(&problems, &format!("{p}.confidence")).len(), 1);
    assert_eq!(at(&problems, &format!("{p}.tolerance")).len(), 1);
    assert_eq!(at(&problems, &format!("{p}.outlierFactor")).len(), 1);

    metric.mann_whitney = None;
    let prom = metric.provider.prometheus.as_mut().expect("set");
    prom.canary_requests_query = Some(GOOD_QUERY.to_owned());
    prom.baseline_requests_query = Some(GOOD_QUERY.to_owned());
    metric.sequential = Some(SequentialJudge {
        alpha: Some(0.0),
        fail_margin: Some(0.1),
        pass_margin: Some(0.2),
        ..Default::default()
    });
    let problems = validate_template(&template(vec![metric.clone()]));
    let p = "spec.metrics[0].sequential";
    assert_eq!(at(&problems, &format!("{p}.alpha")).len(), 1);
    // A pass margin above the fail margin is allowed: every ratio is then decided.
    assert!(at(&problems, &format!("{p}.passMargin")).is_empty());

    for (label, test, problems_expected) in [
        ("pod", SequentialTest::ErrorCounts, 0),
        (
            "topology_kubernetes_io_zone",
            SequentialTest::ErrorCounts,
            0,
        ),
        ("pod name", SequentialTest::ErrorCounts, 1),
        ("1pod", SequentialTest::ErrorCounts, 1),
        ("", SequentialTest::ErrorCounts, 1),
        (&"x".repeat(129), SequentialTest::ErrorCounts, 1),
        ("pod", SequentialTest::Latency, 1),
    ] {
        metric.sequential = Some(SequentialJudge {
            test: Some(test),
            stratify_by: Some(label.to_owned()),
            slow_threshold_seconds: (test == SequentialTest::Latency).then_some(0.5),
            ..Default::default()
        });
        let problems = validate_template(&template(vec![metric.clone()]));
        let found = at(&problems, &format!("{p}.stratifyBy"));
        assert_eq!(
            found.len(),
            problems_expected,
            "{label:?} {test:?}: {found:?}"
        );
    }
}

#[test]
fn scoring_thresholds() {
    let mut spec = template(vec![threshold_metric("m", GOOD_QUERY, "true")]);
    spec.scoring = Some(Scoring {
        marginal_threshold: Some(96.0),
        pass_threshold: Some(101.0),
        ..Default::default()
    });
    let problems = validate_template(&spec);
    assert_eq!(at(&problems, "spec.scoring.passThreshold").len(), 1);
    assert_eq!(at(&problems, "spec.scoring.marginalThreshold").len(), 0);
    assert!(at(&problems, "spec.scoring")[0].contains("has none"));
}

#[test]
fn undeclared_arguments_are_named_with_a_suggestion() {
    let query = r#"sum(rate(x{service="{{args.servce}}"}[5m]))"#;
    let problems = validate_template(&template(vec![threshold_metric("m", query, "true")]));
    assert_eq!(
        at(&problems, "spec.metrics[0].provider.prometheus.query"),
        ["`{{args.servce}}` is not declared in spec.args (did you mean `service`?)"]
    );
}

#[test]
fn cel_conditions_compile_and_see_only_result() {
    let cases = [
        ("result <", "CEL does not compile"),
        ("results < 0.01", "`results` is not defined"),
        ("frobnicate(result)", "unknown function `frobnicate`"),
    ];
    for (condition, expected) in cases {
        let problems = validate_template(&template(vec![threshold_metric(
            "m", GOOD_QUERY, condition,
        )]));
        let found = at(&problems, "spec.metrics[0].successCondition");
        assert_eq!(found.len(), 1, "{condition}: {problems:?}");
        assert!(found[0].contains(expected), "{condition}: {found:?}");
    }
    for fine in [
        "isNaN(result) || result < 0.01",
        "result.all(r, r.value < 0.5)",
        "size(result) > 0 && result[0].value < 1.0",
        "type(result) == double && !isInf(result)",
        "math.abs(result) < 1.0 && isFinite(result)",
        "math.greatest(result, 1.0) > 0.0",
    ] {
        let problems = validate_template(&template(vec![threshold_metric("m", GOOD_QUERY, fine)]));
        assert_eq!(problems, vec![], "{fine}");
    }
}

#[test]
fn promql_must_parse() {
    let problems = validate_template(&template(vec![threshold_metric(
        "m",
        "sum(rate(x[5m])",
        "true",
    )]));
    let found = at(&problems, "spec.metrics[0].provider.prometheus.query");
    assert_eq!(found.len(), 1);
    assert!(found[0].starts_with("PromQL does not parse"), "{found:?}");
}

#[test]
fn bare_placeholders_parse_with_neutral_values() {
    let mut spec = template(vec![threshold_metric(
        "m",
        r#"histogram_quantile({{args.q}}, sum by (le) (rate({{args.metric}}{service="{{args.service}}"}[{{args.window}}])))"#,
        "result < 0.5",
    )]);
    spec.args.push(arg("q", None));
    spec.args.push(arg("metric", None));
    spec.args.push(arg("window", None));
    assert_eq!(validate_template(&spec), vec![]);
}

fn traps(query: &str) -> Vec<String> {
    let problems = validate_template(&template(vec![threshold_metric("m", query, "true")]));
    at(&problems, "spec.metrics[0].provider.prometheus.query")
}

#[test]
fn histogram_quantile_must_aggregate_by_le() {
    let unaggregated = traps("histogram_quantile(0.95, rate(x_bucket[5m]))");
    assert_eq!(unaggregated.len(), 1);
    assert!(unaggregated[0].contains("unaggregated buckets"));

    let dropped = traps("histogram_quantile(0.95, sum(rate(x_bucket[5m])))");
    assert_eq!(dropped.len(), 1);
    assert!(dropped[0].contains("drops `le`"));
    assert_eq!(
        traps("histogram_quantile(0.95, sum by (pod) (rate(x_bucket[5m])))").len(),
        1
    );
    assert_eq!(
        traps("histogram_quantile(0.95, sum without (le) (rate(x_bucket[5m])))").len(),
        1
    );

    assert_eq!(
        traps("histogram_quantile(0.95, sum by (le) (rate(x_bucket[5m])))"),
        Vec::<String>::new()
    );
    assert_eq!(
        traps("histogram_quantile(0.95, sum(rate(x_bucket[5m])) by (le, role))"),
        Vec::<String>::new()
    );
    assert_eq!(
        traps("histogram_quantile(0.95, sum without (pod) (rate(x_bucket[5m])))"),
        Vec::<String>::new()
    );
    // Native histograms have no `le`: nothing to keep.
    assert_eq!(
        traps("histogram_quantile(0.95, sum(rate(x_seconds[5m])))"),
        Vec::<String>::new()
    );
}

#[test]
fn le_inf_only_selectors_are_flagged() {
    let found = traps(r#"sum(rate(x_bucket{le="+Inf"}[5m]))"#);
    assert_eq!(found.len(), 1);
    assert!(found[0].contains("`x_count`"), "{found:?}");
}

#[test]
fn unaggregated_error_ratios_are_flagged() {
    let found = traps(r#"rate(x_total{code=~"5.."}[5m]) / rate(x_total[5m])"#);
    assert_eq!(found.len(), 1);
    assert!(found[0].starts_with("unaggregated ratio"));
    assert_eq!(
        traps(r#"sum(rate(x_total{code=~"5.."}[5m])) / sum(rate(x_total[5m]))"#),
        Vec::<String>::new()
    );
    // Same selector over two windows: a deliberate per-series comparison.
    assert_eq!(
        traps("rate(x_total[1m]) / rate(x_total[5m])"),
        Vec::<String>::new()
    );
}

#[test]
fn provider_address_and_timeout() {
    let mut metric = threshold_metric("m", GOOD_QUERY, "true");
    let prom = metric.provider.prometheus.as_mut().expect("set");
    prom.address = Some("prometheus:9090/x".to_owned());
    prom.timeout = Some("10".to_owned());
    let problems = validate_template(&template(vec![metric.clone()]));
    let p = "spec.metrics[0].provider.prometheus";
    assert_eq!(at(&problems, &format!("{p}.address")).len(), 1);
    assert_eq!(at(&problems, &format!("{p}.timeout")).len(), 1);

    metric.provider.prometheus = None;
    let problems = validate_template(&template(vec![metric]));
    assert_eq!(at(&problems, "spec.metrics[0].provider").len(), 1);
}

#[test]
fn suggest_finds_close_field_names() {
    let fields = ["successCondition", "failureCondition", "interval"];
    assert_eq!(suggest("succesCondition", fields), Some("successCondition"));
    assert_eq!(
        suggest("success_condition", fields),
        Some("successCondition")
    );
    assert_eq!(suggest("Interval", fields), Some("interval"));
    assert_eq!(suggest("provider", fields), None);
}

#[test]
fn interval_of_a_hundred_million_hours_is_refused_naming_the_ceiling() {
    let mut metric = threshold_metric("errors", GOOD_QUERY, "result < 0.01");
    metric.interval = Some("100000000h".to_owned());
    metric.initial_delay = Some("100000000h".to_owned());
    metric.count = Some(2);
    let problems = validate_template(&template(vec![metric]));
    for field in ["interval", "initialDelay"] {
        assert_eq!(
            at(&problems, &format!("spec.metrics[0].{field}")),
            [
                r#""100000000h" is longer than the ceiling of 720h (MAX_DURATION); write a duration of at most 720h"#
            ],
            "{problems:#?}"
        );
    }
    let mut metric = threshold_metric("errors", GOOD_QUERY, "result < 0.01");
    metric.interval = Some("720h".to_owned());
    metric.count = Some(2);
    assert_eq!(validate_template(&template(vec![metric])), vec![]);
}

#[test]
fn query_timeout_of_a_million_hours_is_refused_naming_the_ceiling() {
    let mut metric = threshold_metric("errors", GOOD_QUERY, "result < 0.01");
    let prom = metric.provider.prometheus.as_mut().expect("set");
    prom.timeout = Some("1000000h".to_owned());
    let problems = validate_template(&template(vec![metric.clone()]));
    assert_eq!(
        at(&problems, "spec.metrics[0].provider.prometheus.timeout"),
        [
            r#""1000000h" is longer than the ceiling of 5m (MAX_QUERY_TIMEOUT); write a duration of at most 5m"#
        ]
    );
    let prom = metric.provider.prometheus.as_mut().expect("set");
    prom.timeout = Some("5m".to_owned());
    assert_eq!(validate_template(&template(vec![metric])), vec![]);
}

#[test]
fn a_sequential_count_is_at_least_what_the_test_needs_to_decide() {
    let mut metric = threshold_metric("errors", GOOD_QUERY, "true");
    metric.success_condition = None;
    metric.sequential = Some(SequentialJudge::default());
    metric.interval = Some("1m".to_owned());
    let prom = metric.provider.prometheus.as_mut().expect("set");
    prom.query = None;
    prom.canary_query = Some(GOOD_QUERY.to_owned());
    prom.baseline_query = Some(GOOD_QUERY.to_owned());
    prom.canary_requests_query = Some(GOOD_QUERY.to_owned());
    prom.baseline_requests_query = Some(GOOD_QUERY.to_owned());
    // The minimum is the test's own: with the shipped defaults one overwhelming interval
    // decides (the stratified test weighs evidence from the first interval on).
    let config = crate::analysis::judge::sequential::CountTestConfig {
        alpha: SequentialJudge::DEFAULT_ALPHA,
        fail_margin: SequentialJudge::DEFAULT_FAIL_MARGIN,
        pass_margin: SequentialJudge::DEFAULT_PASS_MARGIN,
        ..Default::default()
    };
    let minimum = crate::analysis::sensitivity::fewest_measurements_to_decide(&config)
        .expect("the default test decides within 100 measurements");
    let minimum = i32::try_from(minimum).expect("small");
    if minimum > 1 {
        metric.count = Some(minimum - 1);
        let problems = validate_template(&template(vec![metric.clone()]));
        let found = at(&problems, "spec.metrics[0].count");
        assert_eq!(found.len(), 1, "{problems:#?}");
        assert!(
            found[0].contains(&format!("needs at least {minimum} measurements")),
            "{found:?}"
        );
    }
    metric.count = Some(minimum);
    assert_eq!(validate_template(&template(vec![metric])), vec![]);
}

#[test]
fn lint_refuses_a_4000_term_condition_and_nested_maps_as_too_costly() {
    let long = vec!["result > 0"; 4000].join(" && ");
    let list = "[1,2,3,4,5,6,7,8,9,10]";
    let nested =
        format!("{list}.map(a, {list}.map(b, {list}.map(c, {list}.map(d, a)))).size() > 0");
    let deep = format!("{}(result > 0)", "!".repeat(4000));
    for condition in [long, nested, deep] {
        let problems = validate_template(&template(vec![threshold_metric(
            "m", GOOD_QUERY, &condition,
        )]));
        let found = at(&problems, "spec.metrics[0].successCondition");
        assert_eq!(found.len(), 1, "{problems:#?}");
        assert!(found[0].starts_with("too costly: "), "{found:?}");
    }
}

#[test]
fn a_metric_name_argument_cannot_subtract_another_series() {
    let query = r#"sum(rate({{args.metric}}{job="web"}[5m]))"#;
    let attack = "http_requests_total-http_requests_total";
    let err = substitute(query, &args(&[("metric", attack)])).expect_err("refused");
    assert!(
        matches!(&err, TemplateError::SubstituteArg { name, reason } if name == "metric" && reason.contains("exactly one token")),
        "{err}"
    );
    assert_eq!(
        substitute(query, &args(&[("metric", "http_requests_total")])),
        Ok(r#"sum(rate(http_requests_total{job="web"}[5m]))"#.to_owned())
    );
}

#[test]
fn a_range_of_5m_minus_4m_is_refused() {
    let query = "sum(rate(x[{{args.window}}]))";
    for attack in ["5m-4m", "5m - 4m", "5m]) or vector(1", "-5m"] {
        let err = substitute(query, &args(&[("window", attack)])).expect_err(attack);
        assert!(err.to_string().contains("window"), "{err}");
    }
    for fine in ["5m", "1h30m", "500ms"] {
        assert!(
            substitute(query, &args(&[("window", fine)])).is_ok(),
            "{fine}"
        );
    }
}

#[test]
fn bare_values_are_one_name_number_or_duration() {
    let query = "x > {{args.t}}";
    for fine in ["0.95", "20", "1e-3", "2.5E+4"] {
        assert!(substitute(query, &args(&[("t", fine)])).is_ok(), "{fine}");
    }
    for refused in ["-1", "1 + 1", "1.", ".5", "0x1F", "1e", "a.b", "web-1"] {
        assert!(
            substitute(query, &args(&[("t", refused)])).is_err(),
            "{refused}"
        );
    }
}

#[test]
fn a_name_that_parses_as_a_number_is_caught_by_the_neutral_shape() {
    // `Inf` lexes as a name but PromQL reads it as a number: compared with the neutral name
    // `x` (not with the value itself) the shape differs.
    let err = substitute("x > {{args.t}}", &args(&[("t", "Inf")])).expect_err("refused");
    assert!(err.to_string().contains("structure"), "{err}");
}

#[test]
fn a_regex_argument_dot_star_matches_literally() {
    for (query, op) in [
        (r#"x{ns=~"{{args.ns}}"}"#, "=~"),
        (r#"x{ns !~ '{{args.ns}}'}"#, "!~"),
    ] {
        let out =
            substitute(query, &args(&[("ns", ".*")])).unwrap_or_else(|e| panic!("{query}: {e}"));
        let parsed = promql_parser::parser::parse(&out).expect("parses");
        let Expr::VectorSelector(v) = parsed else {
            panic!("a selector, got {parsed:?}")
        };
        let matcher = v
            .matchers
            .matchers
            .iter()
            .find(|m| m.name == "ns")
            .expect("ns matcher");
        assert_eq!(matcher.value, r"\.\*", "{out}");
        let literal = op == "=~";
        assert_eq!(matcher.is_match(".*"), literal, "{out}");
        assert_eq!(matcher.is_match("prod"), !literal, "{out}");
    }
    // In a raw string a backslash cannot be written portably: refused, not guessed.
    let err = substitute("x{ns=~`{{args.ns}}`}", &args(&[("ns", ".*")])).expect_err("raw");
    assert!(err.to_string().contains("raw"), "{err}");
    assert!(substitute("x{ns=~`{{args.ns}}`}", &args(&[("ns", "prod")])).is_ok());
    // An `=` matcher keeps the value as it is.
    assert_eq!(
        substitute(r#"x{ns="{{args.ns}}"}"#, &args(&[("ns", ".*")])),
        Ok(r#"x{ns=".*"}"#.to_owned())
    );
}

#[test]
fn a_query_with_offset_inf_is_a_problem_not_a_panic() {
    // promql-parser panics converting an infinite offset into a Duration.
    let problems = validate_template(&template(vec![threshold_metric(
        "m",
        "sum(x offset Inf)",
        "result < 1",
    )]));
    let found = at(&problems, "spec.metrics[0].provider.prometheus.query");
    assert_eq!(found.len(), 1, "{problems:#?}");
    assert!(found[0].starts_with("PromQL does not parse"), "{found:?}");
    // Through an argument: refused, not a panic.
    let err = substitute("x offset {{args.w}}", &args(&[("w", "Inf")])).expect_err("refused");
    assert!(err.to_string().contains('w'), "{err}");
}

#[test]
fn a_template_over_the_run_limits_is_refused_by_lint_not_only_at_run_start() {
    let many: Vec<Metric> = (0..=crate::analysis::run::MAX_METRICS_PER_RUN)
        .map(|i| threshold_metric(&format!("m{i}"), GOOD_QUERY, "result < 0.01"))
        .collect();
    let problems = validate_template(&template(many));
    assert!(
        at(&problems, "spec.metrics")[0].contains("MAX_METRICS_PER_RUN"),
        "{problems:#?}"
    );

    let long = "m".repeat(crate::analysis::run::MAX_NAME_BYTES + 1);
    let problems = validate_template(&template(vec![threshold_metric(&long, GOOD_QUERY, "true")]));
    assert!(
        at(&problems, "spec.metrics[0].name")[0].contains("MAX_NAME_BYTES"),
        "{problems:#?}"
    );
}

//! Analysis templates without I/O: `{{args.NAME}}` placeholders, argument resolution, escaped
//! substitution into PromQL, and the validation shared by `vigil lint` and the controller.
//!
//! Validation returns every [`Problem`] it finds (never only the first), each with the path of
//! the offending field, so a user fixes a template in one pass.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use promql_parser::label::MatchOp;
use promql_parser::parser::{Expr, LabelModifier};

use crate::api::duration::parse_duration;
use crate::api::{
    AnalysisTemplateSpec, Argument, EffectSizeMeasure, Metric, PrometheusProvider, Scoring,
    SecretSource, SequentialTest,
};

use crate::analysis::judge::threshold::{
    HELPER_FUNCTIONS as CEL_HELPERS, RESULT_VARIABLE as CEL_RESULT, ThresholdError,
    compile_condition,
};

/// CEL's standard functions and type conversions (the `cel` crate's stdlib), by name.
const CEL_STANDARD: &[&str] = &[
    "size",
    "int",
    "uint",
    "double",
    "string",
    "bytes",
    "bool",
    "type",
    "dyn",
    "duration",
    "timestamp",
    "matches",
    "contains",
    "startsWith",
    "endsWith",
    "max",
    "min",
    "getDate",
    "getDayOfMonth",
    "getDayOfWeek",
    "getDayOfYear",
    "getFullYear",
    "getHours",
    "getMilliseconds",
    "getMinutes",
    "getMonth",
    "getSeconds",
    "hasValue",
    "value",
    "or",
    "orValue",
    "optMap",
    "optFlatMap",
    "optional.of",
    "optional.none",
    "optional.ofNonZeroValue",
];

/// Type names CEL lets an expression mention as identifiers, e.g. `type(result) == double`.
const CEL_TYPE_NAMES: &[&str] = &[
    "int",
    "uint",
    "double",
    "string",
    "bytes",
    "bool",
    "list",
    "map",
    "null_type",
    "type",
    "dyn",
];

/// Words PromQL reads as keywords: a bare argument value standing alone must not be one, or it
/// would change what the query means.
const PROMQL_KEYWORDS: &[&str] = &[
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "atan2",
    "start",
    "end",
    "sum",
    "avg",
    "count",
    "min",
    "max",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "count_values",
    "quantile",
    "group",
    "limitk",
    "limit_ratio",
];

/// Why a placeholder could not be read, an argument resolved, or a value substituted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// A `{{` that does not form `{{args.NAME}}`.
    #[error("parse placeholder at byte {at}: {reason}")]
    ParsePlaceholder {
        /// Byte offset of the `{{`.
        at: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// A declared argument has neither a given value nor a default.
    #[error(
        "resolve argument `{name}`: it has no value; pass it from the Rollout's analysis args or give it a default `value` in the template"
    )]
    ResolveArg {
        /// The argument.
        name: String,
    },
    /// An argument's value comes from `valueFrom`, which the caller must read first.
    #[error(
        "resolve argument `{name}`: its value comes from valueFrom, which must be read (Secret or Rollout field) and passed as a value"
    )]
    ResolveArgValueFrom {
        /// The argument.
        name: String,
    },
    /// A value could not be put into the query safely.
    #[error("substitute argument `{name}`: {reason}")]
    SubstituteArg {
        /// The argument.
        name: String,
        /// Why the value was refused.
        reason: String,
    },
}

/// One `{{args.NAME}}` occurrence in a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgRef {
    /// The argument's name.
    pub name: String,
    /// Byte offset of the opening `{{`.
    pub start: usize,
    /// Byte offset just past the closing `}}`.
    pub end: usize,
}

/// One thing wrong with a spec: the path of the field and what is wrong, in words.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    /// Path of the field, e.g. `spec.metrics[1].successCondition`.
    pub path: String,
    /// What is wrong and, where possible, how to fix it.
    pub message: String,
}

impl Problem {
    fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every `{{args.NAME}}` in `query`, in order. Spaces inside the braces are allowed
/// (`{{ args.NAME }}`); anything else between `{{` and `}}`, or a `{{` never closed, is an error.
pub fn placeholders(query: &str) -> Result<Vec<ArgRef>, TemplateError> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(offset) = query[from..].find("{{") {
        let start = from + offset;
        let Some(close) = query[start + 2..].find("}}") else {
            return Err(TemplateError::ParsePlaceholder {
                at: start,
                reason: "`{{` is never closed by `}}`".to_owned(),
            });
        };
        let end = start + 2 + close + 2;
        let inner = query[start + 2..end - 2].trim();
        let Some(name) = inner.strip_prefix("args.") else {
            return Err(TemplateError::ParsePlaceholder {
                at: start,
                reason: format!(
                    "`{}` is not a placeholder; write `{{{{args.NAME}}}}`",
                    &query[start..end]
                ),
            });
        };
        if name.is_empty() {
            return Err(TemplateError::ParsePlaceholder {
                at: start,
                reason: format!("`{}` names no argument", &query[start..end]),
            });
        }
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(TemplateError::ParsePlaceholder {
                at: start,
                reason: format!(
                    "`{}`: an argument name has only letters, digits, `_` and `-`",
                    &query[start..end]
                ),
            });
        }
        found.push(ArgRef {
            name: name.to_owned(),
            start,
            end,
        });
        from = end;
    }
    Ok(found)
}

/// Resolves the values of a template's declared arguments: a value in `given` (the Rollout's or
/// run's args) wins over the template's default. Arguments with `valueFrom` are read by the
/// caller (it has the Secrets and the Rollout) and passed in `given` as plain values. Given
/// arguments the template does not declare are ignored: one Rollout passes args to several
/// templates.
pub fn resolve_args(
    declared: &[Argument],
    given: &[Argument],
) -> Result<BTreeMap<String, String>, TemplateError> {
    let mut resolved = BTreeMap::new();
    for arg in declared {
        let passed = given.iter().rev().find(|g| g.name == arg.name);
        let value = match passed {
            Some(Argument {
                value: Some(value), ..
            }) => value.clone(),
            Some(Argument {
                value_from: Some(_),
                ..
            }) => {
                return Err(TemplateError::ResolveArgValueFrom {
                    name: arg.name.clone(),
                });
            }
            _ => match (&arg.value, &arg.value_from) {
                (Some(default), _) => default.clone(),
                (None, Some(_)) => {
                    return Err(TemplateError::ResolveArgValueFrom {
                        name: arg.name.clone(),
                    });
                }
                (None, None) => {
                    return Err(TemplateError::ResolveArg {
                        name: arg.name.clone(),
                    });
                }
            },
        };
        resolved.insert(arg.name.clone(), value);
    }
    Ok(resolved)
}

/// Where in a PromQL query a placeholder sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Context {
    /// Inside `"..."`.
    Double,
    /// Inside `'...'`.
    Single,
    /// Inside a raw `` `...` `` string.
    Raw,
    /// Outside any string (also inside a `#` comment): only a plain token is allowed.
    Bare,
}

/// The lexical context of each placeholder, found by scanning the query's string literals.
fn contexts(query: &str, refs: &[ArgRef]) -> Vec<Context> {
    let bytes = query.as_bytes();
    let mut state = Context::Bare;
    let mut in_comment = false;
    let mut out = Vec::with_capacity(refs.len());
    let mut next = refs.iter().peekable();
    let mut i = 0;
    while i < bytes.len() {
        if let Some(r) = next.peek()
            && r.start == i
        {
            out.push(state);
            i = r.end;
            next.next();
            continue;
        }
        let b = bytes[i];
        match state {
            Context::Bare if in_comment => {
                if b == b'\n' {
                    in_comment = false;
                }
            }
            Context::Bare => match b {
                b'"' => state = Context::Double,
                b'\'' => state = Context::Single,
                b'`' => state = Context::Raw,
                b'#' => in_comment = true,
                _ => {}
            },
            Context::Double | Context::Single => {
                if b == b'\\' {
                    i += 1;
                } else if (b == b'"' && state == Context::Double)
                    || (b == b'\'' && state == Context::Single)
                {
                    state = Context::Bare;
                }
            }
            Context::Raw => {
                if b == b'`' {
                    state = Context::Bare;
                }
            }
        }
        i += 1;
    }
    // Placeholders after a dangling escape at the very end keep the last state.
    while out.len() < refs.len() {
        out.push(state);
    }
    out
}

fn escape_string(value: &str, quote: char) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

fn is_ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b':'
}

/// Checks a value for a placeholder outside any string literal.
fn check_bare(query: &str, r: &ArgRef, value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("empty value outside a quoted string".to_owned());
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b':' | b'.' | b'-'))
    {
        return Err(format!(
            "{value:?} is outside a quoted string, where only letters, digits, `_`, `:`, `.` and `-` are allowed; quote the placeholder in the query if it is a label value"
        ));
    }
    let before = query.as_bytes()[..r.start].last().copied();
    let after = query.as_bytes().get(r.end).copied();
    let standalone = !before.is_some_and(is_ident_byte) && !after.is_some_and(is_ident_byte);
    if standalone && PROMQL_KEYWORDS.contains(&value) {
        return Err(format!(
            "{value:?} is a PromQL keyword and would change the query"
        ));
    }
    Ok(())
}

/// Replaces each placeholder with the text `replace` gives for it.
fn splice(query: &str, refs: &[ArgRef], mut replace: impl FnMut(usize) -> String) -> String {
    let mut out = String::with_capacity(query.len());
    let mut last = 0;
    for (i, r) in refs.iter().enumerate() {
        out.push_str(&query[last..r.start]);
        out.push_str(&replace(i));
        last = r.end;
    }
    out.push_str(&query[last..]);
    out
}

/// Substitutes `{{args.NAME}}` placeholders with values from `args`.
///
/// A value inside a quoted PromQL string is escaped as a string literal (`\`, the quote,
/// newline, carriage return, tab), so it stays one label value whatever it contains. A value
/// outside a string must be a plain token (`^[A-Za-z0-9_:.-]+$`, not a keyword standing alone).
/// As a last guard, when the query parses, the substituted query must have the same syntax
/// tree shape as the query with neutral values: an argument can never change what is queried.
pub fn substitute(query: &str, args: &BTreeMap<String, String>) -> Result<String, TemplateError> {
    let refs = placeholders(query)?;
    if refs.is_empty() {
        return Ok(query.to_owned());
    }
    let ctx = contexts(query, &refs);
    let mut values = Vec::with_capacity(refs.len());
    for (r, c) in refs.iter().zip(&ctx) {
        let value = args
            .get(&r.name)
            .ok_or_else(|| TemplateError::SubstituteArg {
                name: r.name.clone(),
                reason: "no value was resolved for it".to_owned(),
            })?;
        let text = match c {
            Context::Double => escape_string(value, '"'),
            Context::Single => escape_string(value, '\''),
            Context::Raw => {
                if value.contains('`') {
                    return Err(TemplateError::SubstituteArg {
                        name: r.name.clone(),
                        reason: "a value inside a raw `...` string cannot contain a backtick"
                            .to_owned(),
                    });
                }
                value.clone()
            }
            Context::Bare => {
                check_bare(query, r, value).map_err(|reason| TemplateError::SubstituteArg {
                    name: r.name.clone(),
                    reason,
                })?;
                value.clone()
            }
        };
        values.push(text);
    }
    let substituted = splice(query, &refs, |i| values[i].clone());
    let neutral = splice(query, &refs, |i| match ctx[i] {
        Context::Bare => values[i].clone(),
        _ => "x".to_owned(),
    });
    if let Ok(neutral_ast) = promql_parser::parser::parse(&neutral) {
        let name = || {
            refs.iter()
                .map(|r| r.name.as_str())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect::<Vec<_>>()
                .join(", ")
        };
        match promql_parser::parser::parse(&substituted) {
            Ok(ast) if shape(&ast) == shape(&neutral_ast) => {}
            Ok(_) => {
                return Err(TemplateError::SubstituteArg {
                    name: name(),
                    reason: "the value changes the structure of the query".to_owned(),
                });
            }
            Err(error) => {
                return Err(TemplateError::SubstituteArg {
                    name: name(),
                    reason: format!("the query no longer parses: {}", one_line(&error)),
                });
            }
        }
    }
    Ok(substituted)
}

/// The structure of a PromQL syntax tree with label values and string literals left out: two
/// queries that differ only in those have the same shape.
pub fn shape(expr: &Expr) -> String {
    let mut out = String::new();
    write_shape(expr, &mut out);
    out
}

fn write_shape(expr: &Expr, out: &mut String) {
    use std::fmt::Write;
    match expr {
        Expr::Aggregate(a) => {
            let _ = write!(out, "agg({}", a.op);
            if let Some(m) = &a.modifier {
                let _ = write!(out, " {}", modifier_shape(m));
            }
            if let Some(p) = &a.param {
                out.push_str(" param ");
                write_shape(p, out);
            }
            out.push(' ');
            write_shape(&a.expr, out);
            out.push(')');
        }
        Expr::Unary(u) => {
            out.push_str("neg(");
            write_shape(&u.expr, out);
            out.push(')');
        }
        Expr::Binary(b) => {
            let _ = write!(out, "bin({} {:?} ", b.op, b.modifier);
            write_shape(&b.lhs, out);
            out.push(' ');
            write_shape(&b.rhs, out);
            out.push(')');
        }
        Expr::Paren(p) => {
            out.push_str("paren(");
            write_shape(&p.expr, out);
            out.push(')');
        }
        Expr::Subquery(s) => {
            let _ = write!(out, "subquery({:?} {:?} ", s.range, s.step);
            write_shape(&s.expr, out);
            out.push(')');
        }
        Expr::NumberLiteral(n) => {
            let _ = write!(out, "num({})", n.val);
        }
        Expr::StringLiteral(_) => out.push_str("str"),
        Expr::VectorSelector(v) => {
            out.push_str("sel(");
            selector_shape(v, out);
            out.push(')');
        }
        Expr::MatrixSelector(m) => {
            let _ = write!(out, "range({:?} ", m.range);
            selector_shape(&m.vs, out);
            out.push(')');
        }
        Expr::Call(c) => {
            let _ = write!(out, "call({}", c.func.name);
            for arg in &c.args.args {
                out.push(' ');
                write_shape(arg, out);
            }
            out.push(')');
        }
        Expr::Extension(_) => out.push_str("ext"),
    }
}

fn selector_shape(v: &promql_parser::parser::VectorSelector, out: &mut String) {
    use std::fmt::Write;
    let op = |m: &promql_parser::label::Matcher| match m.op {
        MatchOp::Equal => "=",
        MatchOp::NotEqual => "!=",
        MatchOp::Re(_) => "=~",
        MatchOp::NotRe(_) => "!~",
    };
    for m in &v.matchers.matchers {
        let _ = write!(out, "{}{} ", m.name, op(m));
    }
    for group in &v.matchers.or_matchers {
        out.push_str("| ");
        for m in group {
            let _ = write!(out, "{}{} ", m.name, op(m));
        }
    }
    let _ = write!(out, "{:?} {:?}", v.offset, v.at);
}

fn modifier_shape(m: &LabelModifier) -> String {
    match m {
        LabelModifier::Include(l) => format!("by{:?}", l.labels),
        LabelModifier::Exclude(l) => format!("without{:?}", l.labels),
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

// ---------------------------------------------------------------------------------------------
// Template validation

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

pub(crate) fn check_duration(value: Option<&str>, path: String, problems: &mut Vec<Problem>) {
    if let Some(text) = value
        && let Err(error) = parse_duration(text)
    {
        problems.push(Problem::new(path, format!("{error}")));
    }
}

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

    let judge = check_judge(metric, path, problems);

    let Some(prom) = &metric.provider.prometheus else {
        problems.push(Problem::new(
            format!("{path}.provider"),
            "no provider: set `prometheus`",
        ));
        return;
    };
    check_prometheus(prom, judge, path, declared, args, problems);
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

fn check_judge(metric: &Metric, path: &str, problems: &mut Vec<Problem>) -> Option<Judge> {
    let threshold = metric.success_condition.is_some() || metric.failure_condition.is_some();
    let mut kinds = Vec::new();
    if threshold {
        kinds.push("successCondition/failureCondition");
    }
    if metric.mann_whitney.is_some() {
        kinds.push("mannWhitney");
    }
    if metric.sequential.is_some() {
        kinds.push("sequential");
    }
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
        for (field, condition) in [
            ("successCondition", &metric.success_condition),
            ("failureCondition", &metric.failure_condition),
        ] {
            if let Some(source) = condition {
                check_cel(source, field, &format!("{path}.{field}"), problems);
            }
        }
        return Some(Judge::Threshold);
    }
    if let Some(mw) = &metric.mann_whitney {
        let here = format!("{path}.mannWhitney");
        if let Some(c) = mw.confidence
            && !(c > 0.0 && c < 1.0)
        {
            problems.push(Problem::new(
                format!("{here}.confidence"),
                format!("{c} is not in (0, 1), e.g. 0.98"),
            ));
        }
        for (field, value) in [
            ("tolerance", mw.tolerance),
            ("allowedIncrease", mw.allowed_increase),
            ("allowedDecrease", mw.allowed_decrease),
            ("criticalIncrease", mw.critical_increase),
            ("criticalDecrease", mw.critical_decrease),
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
        if mw.effect_size_measure == Some(EffectSizeMeasure::Cles) {
            for (field, value) in [
                ("allowedIncrease", mw.allowed_increase),
                ("allowedDecrease", mw.allowed_decrease),
                ("criticalIncrease", mw.critical_increase),
                ("criticalDecrease", mw.critical_decrease),
            ] {
                if let Some(v) = value
                    && v > 1.0
                {
                    problems.push(Problem::new(
                        format!("{here}.{field}"),
                        format!(
                            "{v} is above 1, but the `cles` effect size is a probability in 0..=1"
                        ),
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
        return Some(Judge::MannWhitney);
    }
    if let Some(seq) = &metric.sequential {
        let here = format!("{path}.sequential");
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
        let fail = seq.fail_margin.unwrap_or(0.2);
        let pass = seq.pass_margin.unwrap_or(0.1);
        if seq.pass_early != Some(false) && pass >= fail {
            problems.push(Problem::new(
                format!("{here}.passMargin"),
                format!("{pass} is not below failMargin {fail}; passing early needs passMargin < failMargin"),
            ));
        }
        let test = seq.test.unwrap_or_default();
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
        return Some(Judge::Sequential(test));
    }
    None
}

/// Compiles a CEL condition (as the threshold judge does) and checks it names only `result`,
/// CEL's standard functions, the `math.*` extension and vigil's helpers.
fn check_cel(source: &str, field: &'static str, path: &str, problems: &mut Vec<Problem>) {
    if source.trim().is_empty() {
        problems.push(Problem::new(
            path.to_owned(),
            "empty condition; remove it or write one over `result`, e.g. `result < 0.01`",
        ));
        return;
    }
    let program = match compile_condition(field, source) {
        Ok(program) => program,
        Err(ThresholdError::CompileCondition { message, .. }) => {
            problems.push(Problem::new(
                path.to_owned(),
                format!("CEL does not compile: {}", cel_message(&message)),
            ));
            return;
        }
        // Unknown variables are reported below, all of them, by the walk over the syntax tree.
        Err(_) => match cel::Program::compile(source) {
            Ok(program) => program,
            Err(errors) => {
                problems.push(Problem::new(
                    path.to_owned(),
                    format!("CEL does not compile: {}", cel_message(&errors.to_string())),
                ));
                return;
            }
        },
    };
    let mut unknown_vars = BTreeSet::new();
    let mut unknown_fns = BTreeSet::new();
    let mut bound = Vec::new();
    walk_cel(
        program.expression(),
        &mut bound,
        &mut unknown_vars,
        &mut unknown_fns,
    );
    for var in unknown_vars {
        problems.push(Problem::new(
            path.to_owned(),
            format!("`{var}` is not defined: a condition sees only `result`"),
        ));
    }
    for function in unknown_fns {
        problems.push(Problem::new(
            path.to_owned(),
            format!(
                "unknown function `{function}`; besides CEL's standard functions, conditions may use {}",
                CEL_HELPERS.join(", ")
            ),
        ));
    }
}

/// The CEL parser's message without the echo of the source and its caret line:
/// `ERROR: <input>:1:9: Syntax error: ... | result << 0.01 | ........^` becomes
/// `column 9: Syntax error: ...`.
fn cel_message(text: &str) -> String {
    let first = text.split(" | ").next().unwrap_or(text);
    let first = first.lines().next().unwrap_or(first);
    let first = first.strip_prefix("ERROR: ").unwrap_or(first);
    let message = match first.strip_prefix("<input>:") {
        Some(rest) => match rest.splitn(3, ':').collect::<Vec<_>>().as_slice() {
            [_line, column, message] => format!("column {column}:{message}"),
            _ => rest.to_owned(),
        },
        None => first.to_owned(),
    };
    one_line(&message)
}

fn walk_cel(
    expr: &cel::common::ast::IdedExpr,
    bound: &mut Vec<String>,
    vars: &mut BTreeSet<String>,
    fns: &mut BTreeSet<String>,
) {
    use cel::common::ast::{EntryExpr, Expr as E};
    match &expr.expr {
        E::Unspecified | E::Literal(_) => {}
        E::Ident(name) => {
            if !name.starts_with('@')
                && name != CEL_RESULT
                && !bound.iter().any(|b| b == name)
                && !CEL_TYPE_NAMES.contains(&name.as_str())
            {
                vars.insert(name.clone());
            }
        }
        E::Call(call) => {
            let name = call.func_name.as_str();
            let math = matches!(
                call.target.as_deref().map(|t| &t.expr),
                Some(E::Ident(ns)) if ns == "math"
            );
            let operator = name.starts_with('_')
                || name.starts_with('@')
                || name.starts_with("!_")
                || name.starts_with("-_")
                || name.starts_with("math.");
            if !math && !operator && !CEL_STANDARD.contains(&name) && !CEL_HELPERS.contains(&name) {
                fns.insert(name.to_owned());
            }
            if let Some(target) = &call.target
                && !math
            {
                walk_cel(target, bound, vars, fns);
            }
            for arg in &call.args {
                walk_cel(arg, bound, vars, fns);
            }
        }
        E::Comprehension(comp) => {
            walk_cel(&comp.iter_range, bound, vars, fns);
            let depth = bound.len();
            bound.push(comp.iter_var.clone());
            if let Some(second) = &comp.iter_var2 {
                bound.push(second.clone());
            }
            bound.push(comp.accu_var.clone());
            walk_cel(&comp.accu_init, bound, vars, fns);
            walk_cel(&comp.loop_cond, bound, vars, fns);
            walk_cel(&comp.loop_step, bound, vars, fns);
            walk_cel(&comp.result, bound, vars, fns);
            bound.truncate(depth);
        }
        E::List(list) => {
            for element in &list.elements {
                walk_cel(element, bound, vars, fns);
            }
        }
        E::Map(map) => {
            for entry in &map.entries {
                match &entry.expr {
                    EntryExpr::StructField(field) => walk_cel(&field.value, bound, vars, fns),
                    EntryExpr::MapEntry(e) => {
                        walk_cel(&e.key, bound, vars, fns);
                        walk_cel(&e.value, bound, vars, fns);
                    }
                }
            }
        }
        E::Select(select) => walk_cel(&select.operand, bound, vars, fns),
        E::Struct(s) => {
            for entry in &s.entries {
                match &entry.expr {
                    EntryExpr::StructField(field) => walk_cel(&field.value, bound, vars, fns),
                    EntryExpr::MapEntry(e) => {
                        walk_cel(&e.key, bound, vars, fns);
                        walk_cel(&e.value, bound, vars, fns);
                    }
                }
            }
        }
    }
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
    check_address(
        &prom.address,
        &format!("{here}.address"),
        declared,
        problems,
    );
    check_duration(prom.timeout.as_deref(), format!("{here}.timeout"), problems);
    if let Some(timeout) = prom.timeout.as_deref()
        && parse_duration(timeout).is_ok_and(|d| d.is_zero())
    {
        problems.push(Problem::new(
            format!("{here}.timeout"),
            "0s: a query needs time to answer",
        ));
    }
    if let Some(auth) = &prom.auth {
        let auth_path = format!("{here}.auth");
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

fn check_declared(
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

/// The query with neutral values in place of placeholders, for parsing: a plain `x` inside
/// strings; outside them the declared default when it is a plain token, else a duration after
/// `[`, `:` or `offset`, else a number or a name as `pick` says for the `n`th such placeholder.
fn neutral_query(
    query: &str,
    refs: &[ArgRef],
    args: &[Argument],
    pick: impl Fn(usize) -> bool,
) -> String {
    let ctx = contexts(query, refs);
    let mut n = 0;
    splice(query, refs, |i| {
        if ctx[i] != Context::Bare {
            return "x".to_owned();
        }
        let r = &refs[i];
        if let Some(default) = args
            .iter()
            .find(|a| a.name == r.name)
            .and_then(|a| a.value.as_deref())
            && check_bare(query, r, default).is_ok()
        {
            return default.to_owned();
        }
        let before = query[..r.start].trim_end();
        if before.ends_with('[') || before.ends_with(':') || before.ends_with("offset") {
            return "1m".to_owned();
        }
        n += 1;
        if pick(n - 1) { "x" } else { "1" }.to_owned()
    })
}

/// Parses a query with neutral values for its placeholders. A bare placeholder may stand for a
/// number or a name; up to 2^6 combinations are tried before giving up.
fn parse_neutral(query: &str, refs: &[ArgRef], args: &[Argument]) -> Result<Expr, String> {
    let first = promql_parser::parser::parse(&neutral_query(query, refs, args, |_| false));
    let Err(error) = first else { return first };
    let bare = contexts(query, refs)
        .iter()
        .filter(|c| **c == Context::Bare)
        .count()
        .min(6);
    for mask in 1u32..(1 << bare) {
        let text = neutral_query(query, refs, args, |n| n < 32 && mask & (1 << n) != 0);
        if let Ok(expr) = promql_parser::parser::parse(&text) {
            return Ok(expr);
        }
    }
    Err(error)
}

fn check_query(
    query: &str,
    path: &str,
    declared: &BTreeSet<String>,
    args: &[Argument],
    problems: &mut Vec<Problem>,
) {
    if query.trim().is_empty() {
        problems.push(Problem::new(path.to_owned(), "empty query"));
        return;
    }
    let refs = match placeholders(query) {
        Ok(refs) => refs,
        Err(error) => {
            problems.push(Problem::new(path.to_owned(), error.to_string()));
            return;
        }
    };
    check_declared(&refs, path, declared, problems);
    let ctx = contexts(query, &refs);
    for (r, c) in refs.iter().zip(&ctx) {
        if *c == Context::Bare
            && let Some(default) = args
                .iter()
                .find(|a| a.name == r.name)
                .and_then(|a| a.value.as_deref())
            && let Err(reason) = check_bare(query, r, default)
        {
            problems.push(Problem::new(
                path.to_owned(),
                format!("the default of `{{{{args.{}}}}}`: {reason}", r.name),
            ));
        }
    }
    match parse_neutral(query, &refs, args) {
        Ok(expr) => query_traps(&expr, path, problems),
        Err(error) => problems.push(Problem::new(
            path.to_owned(),
            format!("PromQL does not parse: {}", one_line(&error)),
        )),
    }
}

fn strip_parens(mut expr: &Expr) -> &Expr {
    while let Expr::Paren(p) = expr {
        expr = &p.expr;
    }
    expr
}

fn children(expr: &Expr) -> Vec<&Expr> {
    match expr {
        Expr::Aggregate(a) => {
            let mut out = vec![a.expr.as_ref()];
            if let Some(p) = &a.param {
                out.push(p);
            }
            out
        }
        Expr::Unary(u) => vec![&u.expr],
        Expr::Binary(b) => vec![&b.lhs, &b.rhs],
        Expr::Paren(p) => vec![&p.expr],
        Expr::Subquery(s) => vec![&s.expr],
        Expr::Call(c) => c.args.args.iter().map(|a| a.as_ref()).collect(),
        _ => Vec::new(),
    }
}

/// Every vector selector under `expr` (including those of range selectors).
fn selectors(expr: &Expr) -> Vec<&promql_parser::parser::VectorSelector> {
    match expr {
        Expr::VectorSelector(v) => vec![v],
        Expr::MatrixSelector(m) => vec![&m.vs],
        other => children(other).into_iter().flat_map(selectors).collect(),
    }
}

fn selector_name(v: &promql_parser::parser::VectorSelector) -> Option<&str> {
    v.name.as_deref().or_else(|| {
        v.matchers
            .matchers
            .iter()
            .find(|m| m.name == "__name__" && matches!(m.op, MatchOp::Equal))
            .map(|m| m.value.as_str())
    })
}

/// A `rate`/`increase`/`irate` call directly over a selector: a per-series counter rate.
fn unaggregated_rate(expr: &Expr) -> Option<&promql_parser::parser::VectorSelector> {
    if let Expr::Call(call) = strip_parens(expr)
        && matches!(call.func.name, "rate" | "increase" | "irate")
        && let Some(arg) = call.args.args.first()
        && let Expr::MatrixSelector(m) = strip_parens(arg)
    {
        return Some(&m.vs);
    }
    None
}

fn selector_key(v: &promql_parser::parser::VectorSelector) -> (Option<&str>, BTreeSet<String>) {
    (
        selector_name(v),
        v.matchers
            .matchers
            .iter()
            .filter(|m| m.name != "__name__")
            .map(|m| format!("{}{}{:?}", m.name, m.op, m.value))
            .collect(),
    )
}

/// The semantic traps of canary queries that parse fine but answer the wrong question.
fn query_traps(expr: &Expr, path: &str, problems: &mut Vec<Problem>) {
    match expr {
        Expr::Call(call) if call.func.name == "histogram_quantile" => {
            if let Some(inner) = call.args.args.get(1) {
                histogram_quantile_trap(inner, path, problems);
            }
        }
        Expr::Binary(b) if b.op.to_string() == "/" => {
            if let (Some(lhs), Some(rhs)) = (unaggregated_rate(&b.lhs), unaggregated_rate(&b.rhs))
                && selector_key(lhs) != selector_key(rhs)
            {
                problems.push(Problem::new(
                    path.to_owned(),
                    "unaggregated ratio: `A / B` of per-series rates gives one ratio per series (several values), or nothing when the label sets differ; aggregate both sides, e.g. `sum(rate(errors[5m])) / sum(rate(requests[5m]))`",
                ));
            }
        }
        Expr::VectorSelector(v) => le_inf_trap(v, path, problems),
        Expr::MatrixSelector(m) => le_inf_trap(&m.vs, path, problems),
        _ => {}
    }
    for child in children(expr) {
        query_traps(child, path, problems);
    }
}

fn le_inf_trap(v: &promql_parser::parser::VectorSelector, path: &str, problems: &mut Vec<Problem>) {
    if v.matchers
        .matchers
        .iter()
        .any(|m| m.name == "le" && matches!(m.op, MatchOp::Equal) && m.value == "+Inf")
    {
        let name = selector_name(v).unwrap_or("the histogram");
        let count = name
            .strip_suffix("_bucket")
            .map(|base| format!("`{base}_count`"))
            .unwrap_or_else(|| "the histogram's `_count` series".to_owned());
        problems.push(Problem::new(
            path.to_owned(),
            format!(
                "`le=\"+Inf\"` selects only the +Inf bucket of `{name}`: to count requests use {count}; a quantile over one bucket is NaN"
            ),
        ));
    }
}

fn histogram_quantile_trap(inner: &Expr, path: &str, problems: &mut Vec<Problem>) {
    // Only classic histograms have `le` buckets; native histograms aggregate without `le`.
    let classic = selectors(inner)
        .iter()
        .any(|v| selector_name(v).is_some_and(|n| n.ends_with("_bucket")));
    if !classic {
        return;
    }
    match strip_parens(inner) {
        Expr::Aggregate(agg) => {
            let keeps_le = match &agg.modifier {
                Some(LabelModifier::Include(labels)) => labels.labels.iter().any(|l| l == "le"),
                Some(LabelModifier::Exclude(labels)) => !labels.labels.iter().any(|l| l == "le"),
                None => false,
            };
            if !keeps_le {
                problems.push(Problem::new(
                    path.to_owned(),
                    format!(
                        "histogram_quantile over `{}` whose aggregation drops `le`: the buckets are summed away and the quantile is NaN; keep it, e.g. `sum by (le) (rate(x_bucket[5m]))`",
                        agg.op
                    ),
                ));
            }
        }
        Expr::Call(_) | Expr::VectorSelector(_) | Expr::MatrixSelector(_) => {
            problems.push(Problem::new(
                path.to_owned(),
                "histogram_quantile over unaggregated buckets gives one quantile per series (pod, instance...), not one value; aggregate them: `histogram_quantile(q, sum by (le) (rate(x_bucket[5m])))`",
            ));
        }
        _ => {}
    }
}

/// The closest of `candidates` to `word` (same letters ignoring case, `_` and `-`, or a small
/// edit distance), for "did you mean" hints.
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let normal = |s: &str| {
        s.chars()
            .filter(|c| *c != '_' && *c != '-')
            .flat_map(char::to_lowercase)
            .collect::<String>()
    };
    let target = normal(word);
    let limit = (word.chars().count() / 3).clamp(1, 3);
    let mut best: Option<(usize, &str)> = None;
    for candidate in candidates {
        let distance = if normal(candidate) == target {
            0
        } else {
            edit_distance(word, candidate)
        };
        if distance <= limit && best.is_none_or(|(d, _)| distance < d) {
            best = Some((distance, candidate));
        }
    }
    best.map(|(_, c)| c)
}

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        current[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

// ---------------------------------------------------------------------------------------------
// Rollout validation

#[cfg(test)]
mod tests;

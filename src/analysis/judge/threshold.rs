//! The threshold judge: `successCondition` / `failureCondition` written in CEL over `result`.
//!
//! `result` is a number for a single value, or a list of `{labels: {..}, value: n}` for a
//! vector. Helpers: `isNaN(x)`, `isInf(x)`, `isFinite(x)` and the CEL math extension
//! (`math.isNaN`, `math.abs`, `math.greatest`, ...).
//!
//! Semantics, boundary cases included:
//! - `failureCondition` true → Failed, whatever `successCondition` says.
//! - only `successCondition`: true → Successful, false → Failed.
//! - only `failureCondition`: false → Successful.
//! - both, and neither holds → Inconclusive (the value sits between the thresholds).
//! - neither set → a validation error, never a silent pass.
//! - a condition that does not evaluate to a boolean → Error, with the reason.
//!
//! Cost: the `cel` crate has no cost limit, so conditions are bounded statically, as
//! Kubernetes bounds its CEL rules, before and after parsing ([`check_condition_source`],
//! [`check_condition_tree`]): at most [`MAX_CONDITION_BYTES`] bytes, [`MAX_CONDITION_NESTING`]
//! levels of brackets and prefix operators, [`MAX_CONDITION_OPERATORS`] operators,
//! [`MAX_CONDITION_NODES`] syntax-tree nodes and [`MAX_COMPREHENSION_NESTING`] level of
//! comprehensions (`all`, `exists`, `exists_one`, `map`, `filter`). At run time `result` holds
//! at most [`MAX_RESULT_SERIES`] series. With no comprehension inside another, each node is
//! evaluated at most once per element of the one list it iterates, so the worst case is about
//! `MAX_RESULT_SERIES × MAX_CONDITION_NODES` (2.56 million) node evaluations, and the
//! evaluator's recursion is no deeper than the syntax tree (at most nesting + operators).

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use cel::{Context, Env, Program, Value};

use crate::api::AnalysisPhase;

/// The variable conditions are written over.
pub const RESULT_VARIABLE: &str = "result";

/// Functions vigil adds to CEL for conditions (beyond the standard library and `math.*`).
pub const HELPER_FUNCTIONS: [&str; 3] = ["isNaN", "isInf", "isFinite"];

/// Longest condition, in bytes. Kubernetes caps a CRD's CEL rule at a similar size; a gate
/// condition is one line (the shipped templates use under 100 bytes).
pub const MAX_CONDITION_BYTES: usize = 4096;

/// Deepest nesting of brackets and prefix operators (`(`, `[`, `{`, `!`, `-`), found by a scan
/// of the source before the parser runs, so neither the parser nor the evaluator recurses
/// deeply. Real conditions nest 2 or 3 levels.
pub const MAX_CONDITION_NESTING: usize = 32;

/// Most operators (binary, member access, ternary, `in`, and every bracket), counted in the
/// source without reading string literals (so an over-count, never an under-count). A chain
/// `a && a && ...` builds a syntax tree as deep as it is long, and the evaluator recurses over
/// it: 4000 terms overflowed the stack. Real conditions use under 20.
pub const MAX_CONDITION_OPERATORS: usize = 128;

/// Most syntax-tree nodes after parsing and macro expansion; with the limits on comprehensions
/// and on `result`, it bounds the work of one evaluation.
pub const MAX_CONDITION_NODES: usize = 256;

/// Comprehensions (`all`, `exists`, `exists_one`, `map`, `filter`) inside one another. One
/// level iterates `result` (or a literal list); a second would multiply: a 267-byte condition
/// of nested `.map`s over literal lists took 57 s and 611 MB.
pub const MAX_COMPREHENSION_NESTING: usize = 1;

/// Most series a vector `result` may hold when a condition is evaluated (the provider caps
/// decoded series at the same order); a larger input is an Error verdict, not a long loop.
pub const MAX_RESULT_SERIES: usize = 10_000;

/// Stack on which a condition is parsed and evaluated (a fresh segment, whatever thread calls).
/// The CEL parser is generated code with large frames: in a debug build one level of
/// parentheses takes about 150 KiB, so [`MAX_CONDITION_NESTING`] levels need about 5 MiB, more
/// than a 2 MiB tokio or test thread has. Only the pages touched are ever committed.
const CONDITION_STACK_BYTES: usize = 16 * 1024 * 1024;

/// Runs `f` (parsing or evaluating a condition) on a stack of [`CONDITION_STACK_BYTES`].
fn on_condition_stack<R>(f: impl FnOnce() -> R) -> R {
    stacker::grow(CONDITION_STACK_BYTES, f)
}

/// Parses a condition with CEL's standard macros (no check of its variables) once it is within
/// the source bounds, on a stack large enough for them. The template validator uses it to walk
/// a condition whose variables [`compile_condition`] refused.
pub fn parse_condition(field: &'static str, source: &str) -> Result<Program, ThresholdError> {
    check_condition_source(source)
        .map_err(|reason| ThresholdError::CompileTooCostly { field, reason })?;
    on_condition_stack(|| cel::Program::compile(source)).map_err(|e| {
        ThresholdError::CompileCondition {
            field,
            message: e.to_string().replace('\n', " "),
        }
    })
}

static ENV: LazyLock<Arc<Env>> = LazyLock::new(|| {
    let mut env = Env::stdlib();
    // The math extension only adds overloads to a fresh stdlib env; it cannot conflict.
    let _ = cel::extensions::math(&mut env);
    Arc::new(env)
});

/// Why a condition could not be compiled or evaluated.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ThresholdError {
    /// Neither condition is set.
    #[error(
        "no successCondition or failureCondition: a metric without a judge would pass silently"
    )]
    ValidateNoCondition,
    /// A condition does not parse.
    #[error("{field}: does not compile: {message}")]
    CompileCondition {
        /// `successCondition` or `failureCondition`.
        field: &'static str,
        /// The parser's message.
        message: String,
    },
    /// A condition is over one of the static bounds on size, nesting or comprehensions.
    #[error("{field}: too costly: {reason}")]
    CompileTooCostly {
        /// `successCondition` or `failureCondition`.
        field: &'static str,
        /// Which bound, with its value.
        reason: String,
    },
    /// A condition reads a variable other than `result`.
    #[error("{field}: unknown variable `{variable}` (only `result` is defined)")]
    CompileUnknownVariable {
        /// `successCondition` or `failureCondition`.
        field: &'static str,
        /// The variable.
        variable: String,
    },
    /// A condition failed while evaluating.
    #[error("{field} `{source_text}`: {message}")]
    EvaluateCondition {
        /// `successCondition` or `failureCondition`.
        field: &'static str,
        /// The condition.
        source_text: String,
        /// What went wrong.
        message: String,
    },
}

/// The value a condition judges.
#[derive(Debug, Clone, PartialEq)]
pub enum ThresholdInput {
    /// One number (possibly NaN or ±Inf).
    Number(f64),
    /// Several labelled values.
    Vector(Vec<(BTreeMap<String, String>, f64)>),
    /// A JSON value other than a number (a web metric's answer): a boolean, a string, a
    /// list or an object, whose numbers are CEL doubles.
    Json(serde_json::Value),
}

/// Most JSON values a `result` from a web metric may hold when a condition is evaluated, the
/// same bound as [`MAX_RESULT_SERIES`] on a vector.
pub const MAX_RESULT_JSON_VALUES: usize = MAX_RESULT_SERIES;

/// How many JSON values `value` holds, itself included; stops counting past `limit`.
fn json_values(value: &serde_json::Value, limit: usize) -> usize {
    let mut count = 0;
    let mut stack = vec![value];
    while let Some(next) = stack.pop() {
        count += 1;
        if count > limit {
            break;
        }
        match next {
            serde_json::Value::Array(items) => stack.extend(items),
            serde_json::Value::Object(fields) => stack.extend(fields.values()),
            _ => {}
        }
    }
    count
}

/// A compiled pair of conditions.
pub struct ThresholdJudge {
    success: Option<(String, Program)>,
    failure: Option<(String, Program)>,
}

impl std::fmt::Debug for ThresholdJudge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThresholdJudge")
            .field("success", &self.success.as_ref().map(|(s, _)| s))
            .field("failure", &self.failure.as_ref().map(|(s, _)| s))
            .finish()
    }
}

/// A verdict with the reason it was reached.
#[derive(Debug, Clone, PartialEq)]
pub struct ThresholdVerdict {
    /// Successful, Failed, Inconclusive or Error.
    pub phase: AnalysisPhase,
    /// The value, the condition, and what it evaluated to.
    pub reason: String,
}

/// Compiles one condition and checks it reads nothing but `result`.
/// Refuses a condition over the static bounds before it reaches the parser.
pub fn compile_condition(field: &'static str, source: &str) -> Result<Program, ThresholdError> {
    let too_costly = |reason| ThresholdError::CompileTooCostly { field, reason };
    check_condition_source(source).map_err(too_costly)?;
    let program = on_condition_stack(|| ENV.compile(source)).map_err(|e| {
        ThresholdError::CompileCondition {
            field,
            message: e.to_string().replace('\n', " "),
        }
    })?;
    check_condition_tree(program.expression()).map_err(too_costly)?;
    // Comprehension variables (`result.all(s, ...)`) are references too, so unknown variables
    // are found by a trial evaluation on both shapes of `result`.
    for trial in [
        ThresholdInput::Number(1.0),
        ThresholdInput::Vector(Vec::new()),
    ] {
        if let Err(cel::ExecutionError::UndeclaredReference(variable)) = execute(&program, &trial) {
            return Err(ThresholdError::CompileUnknownVariable {
                field,
                variable: variable.to_string(),
            });
        }
    }
    Ok(program)
}

/// Checks the source of a condition against [`MAX_CONDITION_BYTES`],
/// [`MAX_CONDITION_OPERATORS`] and [`MAX_CONDITION_NESTING`] without parsing it: one pass,
/// no recursion, so it is safe on any input.
pub fn check_condition_source(source: &str) -> Result<(), String> {
    if source.len() > MAX_CONDITION_BYTES {
        return Err(format!(
            "{} bytes, over the limit of {MAX_CONDITION_BYTES} (MAX_CONDITION_BYTES)",
            source.len()
        ));
    }
    let operators = count_operators(source);
    if operators > MAX_CONDITION_OPERATORS {
        return Err(format!(
            "{operators} operators, over the limit of {MAX_CONDITION_OPERATORS} (MAX_CONDITION_OPERATORS); split the check or simplify it"
        ));
    }
    let nesting = source_nesting(source);
    if nesting > MAX_CONDITION_NESTING {
        return Err(format!(
            "nested {nesting} levels deep, over the limit of {MAX_CONDITION_NESTING} (MAX_CONDITION_NESTING)"
        ));
    }
    Ok(())
}

/// Operator characters and `in` keywords, strings included (an over-count).
fn count_operators(source: &str) -> usize {
    let symbols = source
        .bytes()
        .filter(|b| b"([{!-+*/%<>=&|?.".contains(b))
        .count();
    let words = source
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| *word == "in")
        .count();
    symbols + words
}

/// The deepest nesting of brackets and runs of prefix `!`/`-`, outside string literals.
fn source_nesting(source: &str) -> usize {
    let bytes = source.as_bytes();
    let (mut depth, mut deepest, mut prefix_run) = (0usize, 0usize, 0usize);
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'"' | b'\'' => {
                i = skip_string(bytes, i);
                prefix_run = 0;
                continue;
            }
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            b'!' | b'-' if bytes.get(i + 1) != Some(&b'=') => prefix_run += 1,
            b if b.is_ascii_whitespace() => {}
            _ => prefix_run = 0,
        }
        deepest = deepest.max(depth + prefix_run);
        i += 1;
    }
    deepest
}

/// The index just past the string literal opening at `start` (single, double or triple
/// quotes; a backslash escapes the next byte unless the literal is raw, `r"..."`).
fn skip_string(bytes: &[u8], start: usize) -> usize {
    let quote = bytes[start];
    // The prefix is `r`, `rb` or `br` in any case: raw when it holds an `r`.
    let prefix = &bytes[start.saturating_sub(2)..start];
    let raw = prefix.last().is_some_and(|b| matches!(b, b'r' | b'R'))
        || (prefix.len() == 2
            && matches!(prefix[1], b'b' | b'B')
            && matches!(prefix[0], b'r' | b'R'));
    let triple = bytes.get(start + 1) == Some(&quote) && bytes.get(start + 2) == Some(&quote);
    let closer_len = if triple { 3 } else { 1 };
    let mut i = start + closer_len;
    while i < bytes.len() {
        if bytes[i] == b'\\' && !raw {
            i += 2;
            continue;
        }
        if bytes[i] == quote && (!triple || bytes[i..].starts_with(&[quote; 3])) {
            return i + closer_len;
        }
        i += 1;
    }
    bytes.len()
}

/// Checks a parsed condition against [`MAX_CONDITION_NODES`] and
/// [`MAX_COMPREHENSION_NESTING`]. Recursive, but over a tree whose depth the source checks
/// bound.
pub fn check_condition_tree(expr: &cel::common::ast::IdedExpr) -> Result<(), String> {
    let mut nodes = 0;
    let deepest = comprehension_nesting(expr, &mut nodes);
    if nodes > MAX_CONDITION_NODES {
        return Err(format!(
            "{nodes} syntax-tree nodes, over the limit of {MAX_CONDITION_NODES} (MAX_CONDITION_NODES)"
        ));
    }
    if deepest > MAX_COMPREHENSION_NESTING {
        return Err(format!(
            "comprehensions (all, exists, exists_one, map, filter) nested {deepest} deep, over the limit of {MAX_COMPREHENSION_NESTING} (MAX_COMPREHENSION_NESTING): each level multiplies the work"
        ));
    }
    Ok(())
}

/// The expressions of map or struct entries.
fn entry_values(entries: &[cel::common::ast::IdedEntryExpr]) -> Vec<&cel::common::ast::IdedExpr> {
    use cel::common::ast::EntryExpr;
    entries
        .iter()
        .flat_map(|entry| match &entry.expr {
            EntryExpr::StructField(field) => vec![&field.value],
            EntryExpr::MapEntry(e) => vec![&e.key, &e.value],
        })
        .collect()
}

/// The deepest nesting of comprehensions under `expr`; counts nodes into `nodes`.
fn comprehension_nesting(expr: &cel::common::ast::IdedExpr, nodes: &mut usize) -> usize {
    use cel::common::ast::Expr as E;
    *nodes += 1;
    let deepest = |children: &mut dyn Iterator<Item = &cel::common::ast::IdedExpr>,
                   nodes: &mut usize| {
        children.fold(0, |d, child| d.max(comprehension_nesting(child, nodes)))
    };
    match &expr.expr {
        E::Unspecified | E::Literal(_) | E::Ident(_) => 0,
        E::Call(call) => deepest(
            &mut call.target.iter().map(|t| &**t).chain(&call.args),
            nodes,
        ),
        E::Comprehension(c) => {
            let range = comprehension_nesting(&c.iter_range, nodes);
            let body = [&c.accu_init, &c.loop_cond, &c.loop_step, &c.result];
            range.max(1 + deepest(&mut body.into_iter(), nodes))
        }
        E::List(list) => deepest(&mut list.elements.iter(), nodes),
        E::Map(map) => deepest(&mut entry_values(&map.entries).into_iter(), nodes),
        E::Struct(s) => deepest(&mut entry_values(&s.entries).into_iter(), nodes),
        E::Select(select) => comprehension_nesting(&select.operand, nodes),
    }
}

impl ThresholdJudge {
    /// Compiles the conditions of a metric.
    pub fn new(
        success_condition: Option<&str>,
        failure_condition: Option<&str>,
    ) -> Result<Self, ThresholdError> {
        if success_condition.is_none() && failure_condition.is_none() {
            return Err(ThresholdError::ValidateNoCondition);
        }
        let compile = |field, source: Option<&str>| {
            source
                .map(|s| compile_condition(field, s).map(|p| (s.to_owned(), p)))
                .transpose()
        };
        Ok(Self {
            success: compile("successCondition", success_condition)?,
            failure: compile("failureCondition", failure_condition)?,
        })
    }

    /// Judges one value.
    pub fn judge(&self, input: &ThresholdInput) -> ThresholdVerdict {
        if let ThresholdInput::Vector(series) = input
            && series.len() > MAX_RESULT_SERIES
        {
            return ThresholdVerdict {
                phase: AnalysisPhase::Error,
                reason: format!(
                    "result has {} series, over the limit of {MAX_RESULT_SERIES} (MAX_RESULT_SERIES) a condition may iterate; aggregate the query",
                    series.len()
                ),
            };
        }
        if let ThresholdInput::Json(value) = input {
            let count = json_values(value, MAX_RESULT_JSON_VALUES);
            if count > MAX_RESULT_JSON_VALUES {
                return ThresholdVerdict {
                    phase: AnalysisPhase::Error,
                    reason: format!(
                        "result holds more than {MAX_RESULT_JSON_VALUES} JSON values (MAX_RESULT_JSON_VALUES), more than a condition may walk; select less with jsonPath"
                    ),
                };
            }
        }
        let shown = describe(input);
        let failure = match &self.failure {
            Some((source, program)) => match evaluate("failureCondition", source, program, input) {
                Ok(held) => Some((source, held)),
                Err(e) => return error_verdict(&shown, &e),
            },
            None => None,
        };
        if let Some((source, true)) = failure {
            return ThresholdVerdict {
                phase: AnalysisPhase::Failed,
                reason: format!("result {shown} meets failureCondition `{source}`"),
            };
        }
        let success = match &self.success {
            Some((source, program)) => match evaluate("successCondition", source, program, input) {
                Ok(held) => Some((source, held)),
                Err(e) => return error_verdict(&shown, &e),
            },
            None => None,
        };
        match (success, failure) {
            (Some((source, true)), _) => ThresholdVerdict {
                phase: AnalysisPhase::Successful,
                reason: format!("result {shown} meets successCondition `{source}`"),
            },
            (Some((source, false)), None) => ThresholdVerdict {
                phase: AnalysisPhase::Failed,
                reason: format!("result {shown} does not meet successCondition `{source}`"),
            },
            (Some((success_source, false)), Some((failure_source, _))) => ThresholdVerdict {
                phase: AnalysisPhase::Inconclusive,
                reason: format!(
                    "result {shown} meets neither successCondition `{success_source}` nor failureCondition `{failure_source}`"
                ),
            },
            (None, Some((source, _))) => ThresholdVerdict {
                phase: AnalysisPhase::Successful,
                reason: format!("result {shown} does not meet failureCondition `{source}`"),
            },
            (None, None) => ThresholdVerdict {
                phase: AnalysisPhase::Error,
                reason: ThresholdError::ValidateNoCondition.to_string(),
            },
        }
    }
}

fn error_verdict(shown: &str, error: &ThresholdError) -> ThresholdVerdict {
    // CEL cannot order NaN. A NaN usually means 0/0 (no traffic), which is not evidence
    // either way: Inconclusive, with a hint, rather than a silent fail.
    if shown == "NaN" {
        return ThresholdVerdict {
            phase: AnalysisPhase::Inconclusive,
            reason: format!(
                "result NaN (often 0/0: no traffic) cannot be compared; test it with isNaN(result) to decide otherwise ({error})"
            ),
        };
    }
    ThresholdVerdict {
        phase: AnalysisPhase::Error,
        reason: format!("result {shown}: {error}"),
    }
}

fn evaluate(
    field: &'static str,
    source: &str,
    program: &Program,
    input: &ThresholdInput,
) -> Result<bool, ThresholdError> {
    let fail = |message: String| ThresholdError::EvaluateCondition {
        field,
        source_text: source.to_owned(),
        message,
    };
    match execute(program, input) {
        Ok(Value::Bool(held)) => Ok(held),
        Ok(other) => Err(fail(format!("evaluates to {other:?}, not a boolean"))),
        Err(e) => Err(fail(e.to_string())),
    }
}

fn execute(program: &Program, input: &ThresholdInput) -> cel::ResolveResult {
    let mut context = Context::with_env(ENV.clone());
    for (name, check) in [
        ("isNaN", f64::is_nan as fn(f64) -> bool),
        ("isInf", f64::is_infinite),
        ("isFinite", f64::is_finite),
    ] {
        // The names are not standard-library overloads, so declaring them cannot conflict.
        let _ = context.add_function(name, move |x: f64| check(x));
    }
    context.add_variable_from_value(RESULT_VARIABLE, to_cel(input));
    on_condition_stack(|| program.execute(&context))
}

fn to_cel(input: &ThresholdInput) -> Value {
    match input {
        ThresholdInput::Number(value) => Value::Float(*value),
        ThresholdInput::Vector(series) => {
            let items: Vec<Value> = series
                .iter()
                .map(|(labels, value)| {
                    let labels: std::collections::HashMap<String, Value> = labels
                        .iter()
                        .map(|(k, v)| (k.clone(), Value::String(Arc::new(v.clone()))))
                        .collect();
                    let mut entry: std::collections::HashMap<String, Value> =
                        std::collections::HashMap::new();
                    entry.insert("labels".to_owned(), labels.into());
                    entry.insert("value".to_owned(), Value::Float(*value));
                    entry.into()
                })
                .collect();
            Value::List(Arc::new(items))
        }
        ThresholdInput::Json(value) => json_to_cel(value),
    }
}

/// A JSON value as CEL sees it: numbers as doubles (as in a Prometheus `result`), objects as
/// maps with string keys.
fn json_to_cel(value: &serde_json::Value) -> Value {
    match value {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        serde_json::Value::String(text) => Value::String(Arc::new(text.clone())),
        serde_json::Value::Array(items) => {
            Value::List(Arc::new(items.iter().map(json_to_cel).collect()))
        }
        serde_json::Value::Object(fields) => {
            let map: std::collections::HashMap<String, Value> = fields
                .iter()
                .map(|(k, v)| (k.clone(), json_to_cel(v)))
                .collect();
            map.into()
        }
    }
}

/// Formats a value for a reason: numbers with enough precision to compare with a threshold.
pub fn describe(input: &ThresholdInput) -> String {
    match input {
        ThresholdInput::Number(value) => format_number(*value),
        ThresholdInput::Vector(series) => {
            let parts: Vec<String> = series
                .iter()
                .map(|(labels, value)| {
                    let labels: Vec<String> =
                        labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
                    format!("{{{}}} {}", labels.join(","), format_number(*value))
                })
                .collect();
            format!("[{}]", parts.join(", "))
        }
        ThresholdInput::Json(value) => value.to_string(),
    }
}

/// Formats a number the way Prometheus does for NaN and infinities, otherwise with up to six
/// significant digits.
pub fn format_number(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_owned()
    } else if value == f64::INFINITY {
        "+Inf".to_owned()
    } else if value == f64::NEG_INFINITY {
        "-Inf".to_owned()
    } else if value == 0.0 || (value.abs() >= 1e-4 && value.abs() < 1e9) {
        let text = format!("{value:.6}");
        let text = text.trim_end_matches('0').trim_end_matches('.');
        if text.is_empty() || text == "-" {
            "0".to_owned()
        } else {
            text.to_owned()
        }
    } else {
        format!("{value:.6e}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judge_json(success: &str, value: serde_json::Value) -> ThresholdVerdict {
        ThresholdJudge::new(Some(success), None)
            .expect("compiles")
            .judge(&ThresholdInput::Json(value))
    }

    #[test]
    fn json_results_are_cel_values_lists_of_numbers_included() {
        let list = serde_json::json!([0.01, 0.02, 0.3]);
        assert_eq!(
            judge_json("result.all(v, v < 0.1)", list.clone()).phase,
            AnalysisPhase::Failed
        );
        assert_eq!(
            judge_json("result.exists(v, v > 0.2)", list).phase,
            AnalysisPhase::Successful
        );
        let object = serde_json::json!({"ok": true, "status": "green", "p": 1});
        let verdict = judge_json(
            "result.ok && result.status == 'green' && result.p >= 1.0",
            object,
        );
        assert_eq!(verdict.phase, AnalysisPhase::Successful, "{verdict:?}");
        assert_eq!(
            judge_json("result == true", serde_json::json!(false)).phase,
            AnalysisPhase::Failed
        );
        let shown = judge_json("result == 'x'", serde_json::json!("y")).reason;
        assert_eq!(
            shown,
            "result \"y\" does not meet successCondition `result == 'x'`"
        );
    }

    #[test]
    fn a_json_result_over_the_walk_limit_is_an_error_not_a_long_loop() {
        let big = serde_json::Value::Array(vec![serde_json::json!(0); MAX_RESULT_JSON_VALUES]);
        let verdict = judge_json("result.all(v, v < 1.0)", big);
        assert_eq!(verdict.phase, AnalysisPhase::Error);
        assert!(
            verdict.reason.contains("MAX_RESULT_JSON_VALUES"),
            "{}",
            verdict.reason
        );
    }

    fn judge(success: Option<&str>, failure: Option<&str>, value: f64) -> ThresholdVerdict {
        ThresholdJudge::new(success, failure)
            .expect("compiles")
            .judge(&ThresholdInput::Number(value))
    }

    #[test]
    fn success_condition_alone_passes_or_fails() {
        assert_eq!(
            judge(Some("result < 0.01"), None, 0.005).phase,
            AnalysisPhase::Successful
        );
        let failed = judge(Some("result < 0.01"), None, 0.05);
        assert_eq!(failed.phase, AnalysisPhase::Failed);
        assert_eq!(
            failed.reason,
            "result 0.05 does not meet successCondition `result < 0.01`"
        );
    }

    #[test]
    fn boundary_value_is_decided_by_the_operator_written() {
        assert_eq!(
            judge(Some("result < 0.01"), None, 0.01).phase,
            AnalysisPhase::Failed
        );
        assert_eq!(
            judge(Some("result <= 0.01"), None, 0.01).phase,
            AnalysisPhase::Successful
        );
    }

    #[test]
    fn failure_condition_wins_and_between_thresholds_is_inconclusive() {
        let both = |v| judge(Some("result < 0.01"), Some("result >= 0.05"), v).phase;
        assert_eq!(both(0.001), AnalysisPhase::Successful);
        assert_eq!(both(0.02), AnalysisPhase::Inconclusive);
        assert_eq!(both(0.07), AnalysisPhase::Failed);
        assert_eq!(
            judge(None, Some("result >= 0.05"), 0.01).phase,
            AnalysisPhase::Successful
        );
    }

    #[test]
    fn integer_literals_compare_with_float_results() {
        assert_eq!(
            judge(Some("result < 1"), None, 0.5).phase,
            AnalysisPhase::Successful
        );
        assert_eq!(
            judge(Some("result < 1"), None, 2.0).phase,
            AnalysisPhase::Failed
        );
    }

    #[test]
    fn nan_is_inconclusive_unless_a_condition_handles_it() {
        let nan = judge(Some("result < 0.01"), None, f64::NAN);
        assert_eq!(nan.phase, AnalysisPhase::Inconclusive, "{}", nan.reason);
        assert!(
            nan.reason.starts_with("result NaN (often 0/0"),
            "{}",
            nan.reason
        );
        assert_eq!(
            judge(Some("!isNaN(result) && result < 0.01"), None, f64::NAN).phase,
            AnalysisPhase::Failed
        );
        assert_eq!(
            judge(None, Some("isInf(result)"), f64::INFINITY).phase,
            AnalysisPhase::Failed
        );
        assert_eq!(
            judge(Some("math.isFinite(result)"), None, f64::NEG_INFINITY).phase,
            AnalysisPhase::Failed
        );
    }

    #[test]
    fn vector_results_are_lists_of_labels_and_values() {
        let judge =
            ThresholdJudge::new(Some("result.all(s, s.value < 0.5)"), None).expect("compiles");
        let series = |v: f64, pod: &str| (BTreeMap::from([("pod".to_owned(), pod.to_owned())]), v);
        let good = ThresholdInput::Vector(vec![series(0.1, "a"), series(0.2, "b")]);
        let bad = ThresholdInput::Vector(vec![series(0.1, "a"), series(0.9, "b")]);
        assert_eq!(judge.judge(&good).phase, AnalysisPhase::Successful);
        let verdict = judge.judge(&bad);
        assert_eq!(verdict.phase, AnalysisPhase::Failed);
        assert!(
            verdict.reason.contains("pod=\"b\"} 0.9"),
            "{}",
            verdict.reason
        );
    }

    #[test]
    fn no_condition_and_bad_conditions_are_errors() {
        assert_eq!(
            ThresholdJudge::new(None, None).err(),
            Some(ThresholdError::ValidateNoCondition)
        );
        assert!(matches!(
            ThresholdJudge::new(Some("result <"), None),
            Err(ThresholdError::CompileCondition {
                field: "successCondition",
                ..
            })
        ));
        assert!(matches!(
            ThresholdJudge::new(Some("value < 1"), None),
            Err(ThresholdError::CompileUnknownVariable { variable, .. }) if variable == "value"
        ));
        let not_bool = judge(Some("result + 1.0"), None, 1.0);
        assert_eq!(not_bool.phase, AnalysisPhase::Error);
        assert!(
            not_bool.reason.contains("not a boolean"),
            "{}",
            not_bool.reason
        );
    }

    fn too_costly(source: &str) -> String {
        match ThresholdJudge::new(Some(source), None) {
            Err(ThresholdError::CompileTooCostly { reason, .. }) => reason,
            other => panic!("expected CompileTooCostly, got {other:?}"),
        }
    }

    /// The nested `.map` attack of issue 9: 57 s and 611 MB in lint before the bound.
    fn nested_maps(levels: usize) -> String {
        let list = "[1,2,3,4,5,6,7,8,9,10]";
        let mut body = "a0".to_owned();
        for level in (0..levels).rev() {
            body = format!("{list}.map(a{level}, {body})");
        }
        format!("{body}.size() > 0")
    }

    #[test]
    fn a_4000_term_condition_is_refused_before_the_parser_sees_it() {
        let source = vec!["result > 0"; 4000].join(" && ");
        assert!(
            too_costly(&source).contains("MAX_CONDITION"),
            "{source:.40}"
        );
        let short = vec!["result>0"; 300].join("&&");
        assert!(short.len() < MAX_CONDITION_BYTES);
        assert!(too_costly(&short).contains("MAX_CONDITION_OPERATORS"));
    }

    #[test]
    fn deeply_nested_parens_and_bangs_are_refused_before_parsing() {
        let parens = format!("{}result > 0{}", "(".repeat(1000), ")".repeat(1000));
        assert!(too_costly(&parens).contains("MAX_CONDITION"));
        let bangs = format!("{}(result > 0)", "!".repeat(100));
        assert!(too_costly(&bangs).contains("MAX_CONDITION"));
        let negations = format!("{}result > 0", "-".repeat(40));
        assert!(too_costly(&negations).contains("MAX_CONDITION_NESTING"));
        // A raw bytes string cannot hide brackets from the scan.
        let hidden = format!(
            "rb\"\\\" == b'' || {}result > 0{}",
            "(".repeat(40),
            ")".repeat(40)
        );
        assert!(too_costly(&hidden).contains("MAX_CONDITION"), "{hidden}");
        assert_eq!(source_nesting(&hidden), 40);
        // Brackets inside a string literal are text, not nesting.
        let in_string = format!("'{}' != '' && result > 0", "(".repeat(40));
        assert_eq!(check_condition_source(&in_string), Ok(()));
        assert_eq!(
            source_nesting(&format!("'{}' + r\"\\\" + \"\\\"(\"", "(".repeat(40))),
            0
        );
    }

    #[test]
    fn nested_map_over_literal_lists_is_refused_at_compile() {
        let attack = nested_maps(6);
        assert!(attack.len() < 300, "{}", attack.len());
        assert!(
            too_costly(&attack).contains("MAX_COMPREHENSION_NESTING"),
            "{attack}"
        );
        // One level (no multiplication) is fine.
        let one = nested_maps(1);
        let judge = ThresholdJudge::new(Some(&one), None).expect("one level compiles");
        assert_eq!(
            judge.judge(&ThresholdInput::Number(0.0)).phase,
            AnalysisPhase::Successful
        );
    }

    #[test]
    fn a_condition_over_4_kib_is_refused() {
        let source = format!("result < {}", "1".repeat(MAX_CONDITION_BYTES));
        assert!(too_costly(&source).contains("MAX_CONDITION_BYTES"));
    }

    #[test]
    fn conditions_at_every_bound_compile_and_evaluate_on_a_small_stack() {
        let nesting = MAX_CONDITION_NESTING - 1;
        let deep = format!("{}result > 0{}", "(".repeat(nesting), ")".repeat(nesting));
        let terms = MAX_CONDITION_OPERATORS / 3;
        let long = vec!["result > 0"; terms].join(" && ");
        for source in [deep, long] {
            check_condition_source(&source).expect("within the bounds");
            let verdict = std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || {
                    ThresholdJudge::new(Some(&source), None)
                        .map(|j| j.judge(&ThresholdInput::Number(1.0)).phase)
                })
                .expect("spawn")
                .join()
                .expect("no stack overflow");
            assert_eq!(verdict, Ok(AnalysisPhase::Successful));
        }
    }

    #[test]
    fn a_result_over_max_series_is_an_error_verdict_not_a_long_loop() {
        let judge =
            ThresholdJudge::new(Some("result.all(s, s.value < 0.5)"), None).expect("compiles");
        let series = vec![(BTreeMap::new(), 0.1); MAX_RESULT_SERIES + 1];
        let verdict = judge.judge(&ThresholdInput::Vector(series));
        assert_eq!(verdict.phase, AnalysisPhase::Error);
        assert!(
            verdict.reason.contains("MAX_RESULT_SERIES"),
            "{}",
            verdict.reason
        );
    }

    #[test]
    fn numbers_are_formatted_for_people() {
        assert_eq!(format_number(0.05), "0.05");
        assert_eq!(format_number(1.0), "1");
        assert_eq!(format_number(f64::NAN), "NaN");
        assert_eq!(format_number(f64::INFINITY), "+Inf");
        assert_eq!(format_number(1.5e-7), "1.500000e-7");
    }
}

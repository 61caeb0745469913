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

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use cel::{Context, Env, Program, Value};

use crate::api::AnalysisPhase;

/// The variable conditions are written over.
pub const RESULT_VARIABLE: &str = "result";

/// Functions vigil adds to CEL for conditions (beyond the standard library and `math.*`).
pub const HELPER_FUNCTIONS: [&str; 3] = ["isNaN", "isInf", "isFinite"];

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
pub fn compile_condition(field: &'static str, source: &str) -> Result<Program, ThresholdError> {
    let program = ENV
        .compile(source)
        .map_err(|e| ThresholdError::CompileCondition {
            field,
            message: e.to_string().replace('\n', " "),
        })?;
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
    program.execute(&context)
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

    #[test]
    fn numbers_are_formatted_for_people() {
        assert_eq!(format_number(0.05), "0.05");
        assert_eq!(format_number(1.0), "1");
        assert_eq!(format_number(f64::NAN), "NaN");
        assert_eq!(format_number(f64::INFINITY), "+Inf");
        assert_eq!(format_number(1.5e-7), "1.500000e-7");
    }
}

//! Argo Rollouts' conditions (the `expr` language) into vigil's (CEL over `result`).
//!
//! Only what has one meaning in both is translated: `result[0]` (a list in Argo, a number in
//! vigil), the word operators `and`/`or`/`not`, `len` (CEL's `size`), and the guards Argo's
//! documentation teaches for an empty result (`len(result) == 0 || ...` is vigil's
//! `noData: pass`). Anything else that does not compile as CEL is reported, never guessed.

use crate::analysis::judge::threshold::compile_condition;
use crate::api::NoDataPolicy;

use super::traps::unindex_result;

/// A condition translated to CEL, with the no-data policy its guard expressed.
#[derive(Debug, Clone, PartialEq)]
pub struct Translated {
    /// The CEL condition.
    pub condition: String,
    /// `Some` when the condition guarded against an empty result (`len(result) == 0 || …`).
    pub no_data: Option<NoDataPolicy>,
}

/// Why a condition could not be translated.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ExprError {
    /// The translation is not valid CEL over `result`.
    #[error(
        "`{source_text}` has no CEL equivalent vigil can write for you ({reason}); write the condition over `result` by hand"
    )]
    TranslateCondition {
        /// The Argo condition.
        source_text: String,
        /// What CEL said about the attempt.
        reason: String,
    },
    /// Argo functions with no CEL counterpart over vigil's `result`.
    #[error("`{function}` in `{source_text}` has no vigil equivalent: {why}")]
    TranslateFunction {
        /// The Argo condition.
        source_text: String,
        /// The function.
        function: &'static str,
        /// Why, and what to write instead.
        why: &'static str,
    },
}

/// Argo `expr` functions that have no counterpart over vigil's `result`, with the fix.
const UNSUPPORTED_FUNCTIONS: &[(&str, &str)] = &[
    (
        "all(",
        "vigil's `result` is a number for one series; aggregate the query (e.g. `max(...)`) and compare `result`",
    ),
    (
        "any(",
        "vigil's `result` is a number for one series; aggregate the query (e.g. `min(...)`) and compare `result`",
    ),
    (
        "default(",
        "an empty result is vigil's `noData` policy (`noData: pass`, `fail` or `inconclusive`)",
    ),
    (
        "isNil(",
        "an empty result is vigil's `noData` policy (`noData: pass`, `fail` or `inconclusive`)",
    ),
    ("asInt(", "CEL's conversion is `int(...)`"),
    ("asFloat(", "CEL's conversion is `double(...)`"),
];

/// Translates one Argo condition.
pub fn translate(field: &'static str, source: &str) -> Result<Translated, ExprError> {
    let (guarded, guard) = strip_no_data_guard(source.trim());
    // The guard says what the condition is without data; what that means for the measurement
    // depends on the side: a failure condition that holds without data fails it.
    let no_data = guard.map(|holds| match (field, holds) {
        ("failureCondition", true) => NoDataPolicy::Fail,
        ("failureCondition", false) => NoDataPolicy::Pass,
        (_, true) => NoDataPolicy::Pass,
        (_, false) => NoDataPolicy::Fail,
    });
    for (function, why) in UNSUPPORTED_FUNCTIONS {
        if contains_call(guarded, function) {
            return Err(ExprError::TranslateFunction {
                source_text: source.to_owned(),
                function: function.trim_end_matches('('),
                why,
            });
        }
    }
    let unindexed = unindex_result(guarded).unwrap_or_else(|| guarded.to_owned());
    let condition = word_operators(&unindexed);
    compile_condition(field, &condition).map_err(|error| ExprError::TranslateCondition {
        source_text: source.to_owned(),
        reason: error.to_string(),
    })?;
    Ok(Translated { condition, no_data })
}

/// Argo's documented guards against an empty result: without data, `len(result) == 0 || C`
/// holds and `len(result) > 0 && C` does not. Returns the rest of the condition and whether
/// the condition holds without data. vigil says so with `noData`.
fn strip_no_data_guard(source: &str) -> (&str, Option<bool>) {
    let compact: String = source.chars().filter(|c| !c.is_whitespace()).collect();
    let guards = [
        ("len(result)==0||", true),
        ("len(result)==0or", true),
        ("len(result)>0&&", false),
        ("len(result)>0and", false),
    ];
    for (guard, policy) in guards {
        if compact.starts_with(guard) {
            // Find where the guard ends in the original text: after the operator.
            let operator = if guard.ends_with("||") {
                "||"
            } else if guard.ends_with("&&") {
                "&&"
            } else if guard.ends_with("or") {
                " or "
            } else {
                " and "
            };
            if let Some(at) = source.find(operator) {
                return (source[at + operator.len()..].trim(), Some(policy));
            }
        }
    }
    (source, None)
}

/// True when `function` (ending in `(`) is called in `source` outside string literals and not
/// as a method or part of a longer name.
fn contains_call(source: &str, function: &str) -> bool {
    let mut from = 0;
    while let Some(at) = source[from..].find(function) {
        let start = from + at;
        let preceded = source[..start]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
        if !preceded && !inside_string(source, start) {
            return true;
        }
        from = start + function.len();
    }
    false
}

fn inside_string(source: &str, at: usize) -> bool {
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in source[..at].chars() {
        match (quote, c) {
            (Some(_), '\\') if !escaped => {
                escaped = true;
                continue;
            }
            (Some(q), c) if c == q && !escaped => quote = None,
            (None, '"' | '\'') => quote = Some(c),
            _ => {}
        }
        escaped = false;
    }
    quote.is_some()
}

/// `and`/`or`/`not` as CEL's `&&`/`||`/`!`, and `len(` as `size(`, outside string literals.
fn word_operators(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut word = String::new();
    let mut quote: Option<char> = None;
    let mut escaped = false;
    let flush = |word: &mut String, out: &mut String, next: Option<char>| {
        let replaced = match word.as_str() {
            "and" => "&&",
            "or" => "||",
            "not" => "!",
            "len" if next == Some('(') => "size",
            other => other,
        };
        out.push_str(replaced);
        word.clear();
    };
    for c in source.chars() {
        if let Some(q) = quote {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        if c.is_ascii_alphanumeric() || c == '_' {
            word.push(c);
            continue;
        }
        let next = if c == '(' { Some('(') } else { None };
        flush(&mut word, &mut out, next);
        if c == '"' || c == '\'' {
            quote = Some(c);
        }
        out.push(c);
    }
    flush(&mut word, &mut out, None);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(source: &str) -> Translated {
        translate("successCondition", source).expect("translates")
    }

    #[test]
    fn argo_documented_conditions_become_cel_over_a_number() {
        assert_eq!(ok("result[0] >= 0.95").condition, "result >= 0.95");
        assert_eq!(
            ok("result[0] >= 0.9 and result[0] < 2").condition,
            "result >= 0.9 && result < 2"
        );
        assert_eq!(
            ok("isNaN(result[0]) || result[0] >= 0.95").condition,
            "isNaN(result) || result >= 0.95"
        );
        assert_eq!(ok("not (result[0] > 1)").condition, "! (result > 1)");
    }

    #[test]
    fn no_data_guards_become_the_no_data_policy() {
        let pass = ok("len(result) == 0 || result[0] >= 0.95");
        assert_eq!(pass.condition, "result >= 0.95");
        assert_eq!(pass.no_data, Some(NoDataPolicy::Pass));
        let fail = ok("len(result) > 0 && result[0] >= 0.95");
        assert_eq!(fail.condition, "result >= 0.95");
        assert_eq!(fail.no_data, Some(NoDataPolicy::Fail));
        // On the failure side the same guard means the opposite.
        let failure = translate("failureCondition", "len(result) > 0 and result[0] < 0.9")
            .expect("translates");
        assert_eq!(failure.condition, "result < 0.9");
        assert_eq!(failure.no_data, Some(NoDataPolicy::Pass));
    }

    #[test]
    fn functions_without_an_equivalent_are_refused_with_the_fix() {
        let error = translate("successCondition", "all(result, # < 1000)").expect_err("no all");
        assert!(error.to_string().contains("aggregate the query"), "{error}");
        let error =
            translate("successCondition", "default(result, 0) < 0.05").expect_err("no default");
        assert!(error.to_string().contains("noData"), "{error}");
        let error =
            translate("successCondition", "result.requests_made > 1 |").expect_err("not CEL");
        assert!(error.to_string().contains("by hand"), "{error}");
    }

    #[test]
    fn words_inside_strings_are_left_alone() {
        assert_eq!(
            word_operators("'a and b' == x and y"),
            "'a and b' == x && y"
        );
    }
}

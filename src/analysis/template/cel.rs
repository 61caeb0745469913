//! Checks of CEL conditions: they compile and name only `result` and known functions.

use std::collections::BTreeSet;

use crate::analysis::judge::threshold::{
    HELPER_FUNCTIONS as CEL_HELPERS, RESULT_VARIABLE as CEL_RESULT, ThresholdError,
    compile_condition, parse_condition,
};

use super::{Problem, one_line};

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

/// Compiles a CEL condition (as the threshold judge does) and checks it names only `result`,
/// CEL's standard functions, the `math.*` extension and vigil's helpers.
pub(super) fn check_cel(
    source: &str,
    field: &'static str,
    path: &str,
    problems: &mut Vec<Problem>,
) {
    if source.trim().is_empty() {
        problems.push(Problem::new(
            path.to_owned(),
            "empty condition; remove it or write one over `result`, e.g. `result < 0.01`",
        ));
        return;
    }
    let program = match compile_condition(field, source) {
        Ok(program) => program,
        Err(ThresholdError::CompileTooCostly { reason, .. }) => {
            problems.push(Problem::new(
                path.to_owned(),
                format!("too costly: {reason}"),
            ));
            return;
        }
        Err(ThresholdError::CompileCondition { message, .. }) => {
            problems.push(Problem::new(
                path.to_owned(),
                format!("CEL does not compile: {}", cel_message(&message)),
            ));
            return;
        }
        // Unknown variables are reported below, all of them, by the walk over the syntax tree.
        Err(_) => match parse_condition(field, source) {
            Ok(program) => program,
            Err(error) => {
                problems.push(Problem::new(path.to_owned(), error.to_string()));
                return;
            }
        },
    };
    if let Some(message) = crate::convert::traps::indexed_scalar_result(source) {
        problems.push(Problem::new(path.to_owned(), message));
    }
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

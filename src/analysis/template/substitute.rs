//! Escaped substitution of argument values into PromQL, and the shape of a query.

use std::collections::{BTreeMap, BTreeSet};

use promql_parser::label::MatchOp;
use promql_parser::parser::{Expr, LabelModifier};

use super::args::{ArgRef, placeholders};
use super::{TemplateError, one_line};

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

/// Where in a PromQL query a placeholder sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Context {
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
pub(super) fn contexts(query: &str, refs: &[ArgRef]) -> Vec<Context> {
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
pub(super) fn check_bare(query: &str, r: &ArgRef, value: &str) -> Result<(), String> {
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
pub(super) fn splice(
    query: &str,
    refs: &[ArgRef],
    mut replace: impl FnMut(usize) -> String,
) -> String {
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

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
    placements(query, refs)
        .into_iter()
        .map(|(c, _)| c)
        .collect()
}

/// Each placeholder's context and, inside a string literal, the byte offset of its opening
/// quote.
fn placements(query: &str, refs: &[ArgRef]) -> Vec<(Context, Option<usize>)> {
    let bytes = query.as_bytes();
    let mut state = Context::Bare;
    let mut opened_at = None;
    let mut in_comment = false;
    let mut out = Vec::with_capacity(refs.len());
    let mut next = refs.iter().peekable();
    let mut i = 0;
    while i < bytes.len() {
        if let Some(r) = next.peek()
            && r.start == i
        {
            out.push((state, opened_at));
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
            Context::Bare => {
                match b {
                    b'"' => state = Context::Double,
                    b'\'' => state = Context::Single,
                    b'`' => state = Context::Raw,
                    b'#' => in_comment = true,
                    _ => {}
                }
                opened_at = (state != Context::Bare).then_some(i);
            }
            Context::Double | Context::Single => {
                if b == b'\\' {
                    i += 1;
                } else if (b == b'"' && state == Context::Double)
                    || (b == b'\'' && state == Context::Single)
                {
                    state = Context::Bare;
                    opened_at = None;
                }
            }
            Context::Raw => {
                if b == b'`' {
                    state = Context::Bare;
                    opened_at = None;
                }
            }
        }
        i += 1;
    }
    // Placeholders after a dangling escape at the very end keep the last state.
    while out.len() < refs.len() {
        out.push((state, opened_at));
    }
    out
}

/// Whether the string literal opening at `quote` is the value of a regex matcher (`=~`, `!~`).
fn is_regex_value(query: &str, quote: Option<usize>) -> bool {
    quote.is_some_and(|at| {
        let before = query[..at].trim_end();
        before.ends_with("=~") || before.ends_with("!~")
    })
}

/// Escapes every regular-expression metacharacter (RE2's, as Go's `regexp.QuoteMeta`), so the
/// value matches itself literally.
fn regex_quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Every form `value` can take inside a query once substituted: as is (outside quotes),
/// escaped into a `"` or `'` string, and regex-quoted in a matcher (bare in backticks or
/// escaped in a string). The redaction of Secret arguments looks for exactly these, so the
/// two can never drift apart.
pub fn substituted_forms(value: &str) -> Vec<String> {
    let quoted = regex_quote(value);
    vec![
        escape_string(value, '"'),
        escape_string(value, '\''),
        escape_string(&quoted, '"'),
        escape_string(&quoted, '\''),
        quoted,
        value.to_owned(),
    ]
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

/// What a value outside quotes may be: exactly one PromQL token of one of these classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Token {
    /// A name: `[A-Za-z_:][A-Za-z0-9_:]*` (a metric name, a label name, a function).
    Name,
    /// A number without a sign: `0.95`, `20`, `1e-3`.
    Number,
    /// A duration: `5m`, `1h30m`, `500ms`.
    Duration,
}

impl Token {
    /// The value this class is replaced with to compare shapes: the same kind of token, so
    /// the query parses the same way whatever the real value.
    fn neutral(self) -> &'static str {
        match self {
            Token::Name => "x",
            Token::Number => "1",
            Token::Duration => "1m",
        }
    }
}

/// The token class of `value`, if it is exactly one name, unsigned number or duration.
pub(super) fn token_class(value: &str) -> Option<Token> {
    let bytes = value.as_bytes();
    let first = *bytes.first()?;
    if first.is_ascii_alphabetic() || first == b'_' || first == b':' {
        return bytes
            .iter()
            .all(|b| is_ident_byte(*b))
            .then_some(Token::Name);
    }
    if is_duration(value) {
        return Some(Token::Duration);
    }
    is_number(value).then_some(Token::Number)
}

/// `([0-9]+(ms|s|m|h|d|w|y))+`, PromQL's duration literal.
fn is_duration(value: &str) -> bool {
    let mut rest = value;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 {
            return false;
        }
        rest = &rest[digits..];
        let unit = ["ms", "s", "m", "h", "d", "w", "y"]
            .into_iter()
            .find(|u| rest.starts_with(u));
        match unit {
            Some(u) => rest = &rest[u.len()..],
            None => return false,
        }
    }
    !value.is_empty()
}

/// `[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?`: an unsigned decimal number.
fn is_number(value: &str) -> bool {
    let digits = |s: &str| s.len() - s.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let whole = digits(value);
    if whole == 0 {
        return false;
    }
    let mut rest = &value[whole..];
    if let Some(fraction) = rest.strip_prefix('.') {
        let n = digits(fraction);
        if n == 0 {
            return false;
        }
        rest = &fraction[n..];
    }
    if let Some(exponent) = rest.strip_prefix(['e', 'E']) {
        let exponent = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
        let n = digits(exponent);
        return n > 0 && n == exponent.len();
    }
    rest.is_empty()
}

/// Checks a value for a placeholder outside any string literal; returns its token class.
pub(super) fn check_bare(query: &str, r: &ArgRef, value: &str) -> Result<Token, String> {
    if value.is_empty() {
        return Err("empty value outside a quoted string".to_owned());
    }
    let Some(token) = token_class(value) else {
        return Err(format!(
            "{value:?} is outside a quoted string, where a value must be exactly one token: a name (`http_requests_total`), an unsigned number (`0.95`) or a duration (`5m`); quote the placeholder in the query if it is a label value"
        ));
    };
    let preceding = query[..r.start].trim_end();
    let after_offset = preceding
        .strip_suffix("offset")
        .is_some_and(|rest| !rest.bytes().last().is_some_and(is_ident_byte));
    if (preceding.ends_with('[') || after_offset) && token == Token::Name {
        return Err(format!(
            "{value:?} stands where PromQL expects a duration (a range or an offset), e.g. 5m"
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
    Ok(token)
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
/// newline, carriage return, tab), so it stays one label value whatever it contains; in the
/// value of a regex matcher (`=~`, `!~`) its regular-expression metacharacters are escaped
/// first, so it matches itself literally. A value outside a string must be exactly one token:
/// a name, an unsigned number or a duration (not a keyword standing alone). As a last guard,
/// when the query parses, the substituted query must have the same syntax tree shape as the
/// query with neutral values of the same token classes: an argument can never change what is
/// queried.
pub fn substitute(query: &str, args: &BTreeMap<String, String>) -> Result<String, TemplateError> {
    let refs = placeholders(query)?;
    if refs.is_empty() {
        return Ok(query.to_owned());
    }
    let mut values = Vec::with_capacity(refs.len());
    let mut neutrals = Vec::with_capacity(refs.len());
    for (r, (context, quote)) in refs.iter().zip(placements(query, &refs)) {
        let refuse = |reason: String| TemplateError::SubstituteArg {
            name: r.name.clone(),
            reason,
        };
        let value = args
            .get(&r.name)
            .ok_or_else(|| refuse("no value was resolved for it".to_owned()))?;
        let value = if is_regex_value(query, quote) {
            let quoted = regex_quote(value);
            // PromQL parsers disagree on backslashes in raw strings: refuse, never guess.
            if context == Context::Raw && quoted != *value {
                return Err(refuse(
                    "a value with regex metacharacters cannot be quoted inside a raw `...` regex; write the matcher with a double-quoted string".to_owned(),
                ));
            }
            quoted
        } else {
            value.clone()
        };
        let (text, neutral) = match context {
            Context::Double => (escape_string(&value, '"'), "x"),
            Context::Single => (escape_string(&value, '\''), "x"),
            Context::Raw if value.contains('`') => {
                return Err(refuse(
                    "a value inside a raw `...` string cannot contain a backtick".to_owned(),
                ));
            }
            Context::Raw => (value, "x"),
            Context::Bare => {
                let token = check_bare(query, r, &value).map_err(refuse)?;
                (value, token.neutral())
            }
        };
        values.push(text);
        neutrals.push(neutral);
    }
    let substituted = splice(query, &refs, |i| values[i].clone());
    let neutral = splice(query, &refs, |i| neutrals[i].to_owned());
    check_same_shape(&substituted, &neutral, &refs)?;
    Ok(substituted)
}

/// When the query with neutral values parses, the substituted one must parse to the same shape.
fn check_same_shape(
    substituted: &str,
    neutral: &str,
    refs: &[ArgRef],
) -> Result<(), TemplateError> {
    let Ok(neutral_ast) = super::parse_promql(neutral) else {
        return Ok(());
    };
    let name = || {
        refs.iter()
            .map(|r| r.name.as_str())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>()
            .join(", ")
    };
    match super::parse_promql(substituted) {
        Ok(ast) if shape(&ast) == shape(&neutral_ast) => Ok(()),
        Ok(_) => Err(TemplateError::SubstituteArg {
            name: name(),
            reason: "the value changes the structure of the query".to_owned(),
        }),
        Err(error) => Err(TemplateError::SubstituteArg {
            name: name(),
            reason: format!("the query no longer parses: {}", one_line(&error)),
        }),
    }
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
            let _ = write!(
                out,
                "subquery(step:{} {} {} ",
                s.step.is_some(),
                offset_shape(&s.offset),
                at_shape(&s.at)
            );
            write_shape(&s.expr, out);
            out.push(')');
        }
        Expr::NumberLiteral(_) => out.push_str("num"),
        Expr::StringLiteral(_) => out.push_str("str"),
        Expr::VectorSelector(v) => {
            out.push_str("sel(");
            selector_shape(v, out);
            out.push(')');
        }
        Expr::MatrixSelector(m) => {
            out.push_str("range(");
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
    let _ = write!(out, "{} {}", offset_shape(&v.offset), at_shape(&v.at));
}

/// Whether there is an offset and its direction; the duration is a value, not structure.
fn offset_shape(offset: &Option<promql_parser::parser::Offset>) -> &'static str {
    match offset {
        None => "",
        Some(promql_parser::parser::Offset::Pos(_)) => "offset",
        Some(promql_parser::parser::Offset::Neg(_)) => "offset-",
    }
}

/// Whether there is an `@` modifier and of which kind; a timestamp is a value.
fn at_shape(at: &Option<promql_parser::parser::AtModifier>) -> &'static str {
    match at {
        None => "",
        Some(promql_parser::parser::AtModifier::Start) => "@start",
        Some(promql_parser::parser::AtModifier::End) => "@end",
        Some(promql_parser::parser::AtModifier::At(_)) => "@time",
    }
}

fn modifier_shape(m: &LabelModifier) -> String {
    match m {
        LabelModifier::Include(l) => format!("by{:?}", l.labels),
        LabelModifier::Exclude(l) => format!("without{:?}", l.labels),
    }
}

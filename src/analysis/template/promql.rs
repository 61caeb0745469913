//! PromQL checks: parsing a query with neutral values for its placeholders, and the semantic
//! traps of canary queries.

use std::collections::BTreeSet;

use promql_parser::label::MatchOp;
use promql_parser::parser::{Expr, LabelModifier};

use crate::api::Argument;

use super::args::{ArgRef, placeholders};
use super::substitute::{Context, check_bare, contexts, splice};
use super::validate::check_declared;
use super::{Problem, one_line};

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
    let first = super::parse_promql(&neutral_query(query, refs, args, |_| false));
    let Err(error) = first else { return first };
    let bare = contexts(query, refs)
        .iter()
        .filter(|c| **c == Context::Bare)
        .count()
        .min(6);
    for mask in 1u32..(1 << bare) {
        let text = neutral_query(query, refs, args, |n| n < 32 && mask & (1 << n) != 0);
        if let Ok(expr) = super::parse_promql(&text) {
            return Ok(expr);
        }
    }
    Err(error)
}

pub(super) fn check_query(
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
pub(super) fn selectors(expr: &Expr) -> Vec<&promql_parser::parser::VectorSelector> {
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

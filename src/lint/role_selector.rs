//! The note on a Prometheus query that selects an arm by its role (`role="canary"`) rather
//! than by its revision: at a gate's start such a window still counts the previous canary's
//! requests (issue 16, friction 7).

use serde_norway::Value;

/// The query fields of `provider.prometheus` that select series.
const QUERY_FIELDS: [&str; 5] = [
    "query",
    "canaryQuery",
    "baselineQuery",
    "canaryRequestsQuery",
    "baselineRequestsQuery",
];

/// What selecting an arm by role does wrong, and what to select instead.
pub const ROLE_SELECTOR_NOTE: &str = "warning: selects an arm by `role`: a window that \
    reaches back before this release (every gate's first measurements) still counts the \
    previous canary's requests under the same role; select by revision instead: \
    `revision=\"{{args.canary-revision}}\"` (and `{{args.stable-revision}}`, \
    `{{args.baseline-revision}}`), built-in arguments vigil passes to every run";

/// The fields (relative to a metric, e.g. `provider.prometheus.canaryQuery`) whose query
/// matches series by a `role` label.
pub fn role_selecting_fields(metric: &Value) -> Vec<String> {
    let Some(prometheus) = metric.get("provider").and_then(|p| p.get("prometheus")) else {
        return Vec::new();
    };
    QUERY_FIELDS
        .iter()
        .filter(|field| {
            prometheus
                .get(**field)
                .and_then(Value::as_str)
                .is_some_and(selects_by_role)
        })
        .map(|field| format!("provider.prometheus.{field}"))
        .collect()
}

/// Whether a PromQL text has a `role` label matcher (`role="x"`, `role=~"x"`, `role != "x"`)
/// inside a selector's braces.
pub fn selects_by_role(query: &str) -> bool {
    let mut depth = 0usize;
    let bytes = query.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'{' => depth += 1,
            b'}' => depth = depth.saturating_sub(1),
            b'"' | b'\'' | b'`' => {
                // Skip string literals: a label value may contain anything.
                let quote = bytes[i];
                i += 1;
                while i < bytes.len() && bytes[i] != quote {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            // `r` is ASCII, so `i` is a char boundary for the slices below.
            b'r' if depth > 0 && is_role_matcher(query, i) => return true,
            _ => {}
        }
        i += 1;
    }
    false
}

/// Whether `role` followed by a matcher operator starts at byte `at` as a whole label name.
fn is_role_matcher(query: &str, at: usize) -> bool {
    let rest = &query[at..];
    let Some(after) = rest.strip_prefix("role") else {
        return false;
    };
    let before_ok = query[..at]
        .chars()
        .next_back()
        .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'));
    let after = after.trim_start();
    before_ok && (after.starts_with('=') || after.starts_with("!="))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_role_matcher_is_found_inside_selectors_only() {
        assert!(selects_by_role(
            r#"sum(rate(x{rollout="a", role="canary"}[1m]))"#
        ));
        assert!(selects_by_role(r#"x{role =~ "canary|baseline"}"#));
        assert!(selects_by_role(r#"x{role!="stable"}"#));
        assert!(!selects_by_role(
            r#"sum(rate(x{rollout="a", revision="{{args.canary-revision}}"}[1m]))"#
        ));
        // Not a label matcher: a grouping label, a longer label name, a value.
        assert!(!selects_by_role(r#"sum by (role) (x{a="b"})"#));
        assert!(!selects_by_role(r#"x{pod_role="canary"}"#));
        assert!(!selects_by_role(r#"x{app="role=canary"}"#));
        assert!(selects_by_role("x{é=\"ü\", role=\"canary\"}"));
    }

    #[test]
    fn every_query_field_of_a_metric_is_checked() {
        let metric: Value = serde_norway::from_str(
            r#"
provider:
  prometheus:
    canaryQuery: 'x{revision="{{args.canary-revision}}"}'
    baselineQuery: 'x{role="stable"}'
"#,
        )
        .expect("yaml");
        assert_eq!(
            role_selecting_fields(&metric),
            ["provider.prometheus.baselineQuery"]
        );
    }
}

//! The traps a hand translation from Argo Rollouts or Flagger falls into, each written once.
//! `vigil convert` uses them to translate; `vigil lint` (and the template validator) uses the
//! same rules to name the trap and its fix in a vigil document.
//!
//! Pure: text in, text out.

/// The labels of a query that single out a workload by its name. Flagger names the primary
/// `<target>-primary`, so `destination_workload=~"podinfo"` means "the canary" there; under
/// vigil both revisions belong to one Rollout and such a selector matches both (or neither).
const WORKLOAD_NAME_LABELS: &[&str] = &[
    "destination_workload",
    "source_workload",
    "deployment",
    "workload",
    "kubernetes_pod_name",
    "pod",
    "pod_name",
    "job",
    "app",
    "service",
];

/// Flagger's MetricTemplate variables that a query may use as `{{ NAME }}`.
pub const FLAGGER_VARIABLES: &[&str] = &[
    "name",
    "namespace",
    "target",
    "service",
    "ingress",
    "route",
    "interval",
];

/// Why `result[N]` fails under vigil, and the fix, for a condition that indexes `result`
/// without reading a field of the element (`result[0] >= 0.99`). `None` when it does not.
///
/// Argo's Prometheus provider hands conditions a list of values, so its documentation writes
/// `result[0]`; vigil's `result` is a number when the query returns one series (a list of
/// `{labels, value}` only for several), and CEL has no index on a number: the condition would
/// lint clean in Argo's eyes and then error at every measurement.
pub fn indexed_scalar_result(condition: &str) -> Option<String> {
    let fixed = unindex_result(condition)?;
    Some(format!(
        "`result[N]` indexes a list, but vigil's `result` is a number when the query returns one series (Argo's is a list): write `{fixed}`"
    ))
}

/// `condition` with every `result[N]` that is not followed by a field access replaced by
/// `result`; `None` when there is none. String literals are left alone.
pub fn unindex_result(condition: &str) -> Option<String> {
    let bytes = condition.as_bytes();
    let mut out = String::with_capacity(condition.len());
    let mut changed = false;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'"' || b == b'\'' {
            let end = skip_quoted(bytes, i);
            out.push_str(&condition[i..end]);
            i = end;
            continue;
        }
        if condition[i..].starts_with("result")
            && !preceded_by_identifier(bytes, i)
            && let Some(end) = index_end(bytes, i + "result".len())
            && !followed_by_field(bytes, end)
        {
            out.push_str("result");
            changed = true;
            i = end;
            continue;
        }
        let width = condition[i..].chars().next().map_or(1, char::len_utf8);
        out.push_str(&condition[i..i + width]);
        i += width;
    }
    changed.then_some(out)
}

/// The end of `[digits]` (spaces allowed inside) starting at `at`, if there is one.
fn index_end(bytes: &[u8], at: usize) -> Option<usize> {
    let mut i = at;
    while bytes.get(i) == Some(&b' ') {
        i += 1;
    }
    if bytes.get(i) != Some(&b'[') {
        return None;
    }
    i += 1;
    while bytes.get(i) == Some(&b' ') {
        i += 1;
    }
    let digits = i;
    while bytes.get(i).is_some_and(u8::is_ascii_digit) {
        i += 1;
    }
    if i == digits {
        return None;
    }
    while bytes.get(i) == Some(&b' ') {
        i += 1;
    }
    (bytes.get(i) == Some(&b']')).then_some(i + 1)
}

fn followed_by_field(bytes: &[u8], at: usize) -> bool {
    let mut i = at;
    while bytes.get(i) == Some(&b' ') {
        i += 1;
    }
    matches!(bytes.get(i), Some(b'.') | Some(b'['))
}

fn preceded_by_identifier(bytes: &[u8], at: usize) -> bool {
    at > 0
        && (bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_' || bytes[at - 1] == b'.')
}

/// The index just past the quoted literal opening at `start` (a backslash escapes).
fn skip_quoted(bytes: &[u8], start: usize) -> usize {
    let quote = bytes[start];
    let mut i = start + 1;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            i += 2;
            continue;
        }
        if bytes[i] == quote {
            return i + 1;
        }
        i += 1;
    }
    bytes.len()
}

/// A duration written as a bare integer (`timeout: 40`, `pause: {duration: 30}`): Argo reads
/// seconds, vigil wants a unit. Returns the vigil spelling, e.g. `40s`.
pub fn integer_seconds(number: &serde_json::Number) -> Option<String> {
    number.as_u64().map(|seconds| format!("{seconds}s"))
}

/// The message for an integer where vigil wants a duration string.
pub fn integer_seconds_message(number: &serde_json::Number) -> String {
    match integer_seconds(number) {
        Some(fixed) => format!(
            "the number {number}: Argo Rollouts reads a bare integer as seconds, vigil wants a unit: write \"{fixed}\""
        ),
        None => format!("the number {number} is not a duration: write e.g. \"30s\""),
    }
}

/// Where a field of Argo Rollouts or Flagger lives in vigil (or why it has no place), keyed by
/// the path of its parent (with list indexes dropped, e.g. `spec.metrics.provider.prometheus`)
/// and its name. Used by lint to explain an unknown field.
pub fn moved_field(parent: &str, key: &str) -> Option<&'static str> {
    let parent = strip_indexes(parent);
    let in_prometheus = parent.ends_with("provider.prometheus");
    let in_metric = parent.ends_with("spec.metrics");
    let in_canary = parent.ends_with("strategy.canary");
    let message = match key {
        "headers" if in_prometheus => {
            "Argo's `headers: [{key, value}]` are vigil's `auth.headers: [{name, value}]` (or `valueFrom.secretKeyRef` for a secret value)"
        }
        "authentication" if in_prometheus => {
            "Argo's `authentication.basicAuth` is vigil's `auth.basic: {username, password: {secretKeyRef: {name, key}}}`; sigv4 and oauth2 have no vigil equivalent"
        }
        "insecure" if in_prometheus => {
            "vigil never skips TLS verification: give the server's CA as `auth.caBundle`"
        }
        "caCert" if in_prometheus => {
            "vigil reads the CA bundle from a Secret or a file: `auth.caBundle: {secretKeyRef: {name, key}}`"
        }
        "rangeQuery" if in_prometheus => {
            "the threshold judge takes an instant query; for a comparison over a range use the mannWhitney judge (`canaryQuery`, `baselineQuery`, `mannWhitney.step`)"
        }
        "dryRun" if parent.ends_with("spec") || parent.ends_with("analysis") || in_metric => {
            "Argo's `dryRun: [{metricName}]` list is `dryRun: true` on each metric of the template in vigil"
        }
        "measurementRetention" => {
            "vigil keeps a bounded history of measurements per metric on its own; remove it"
        }
        "consecutiveSuccessLimit" if in_metric => {
            "vigil has no consecutiveSuccessLimit; a sequential judge passes early on evidence instead"
        }
        "thresholdRange" | "threshold" if in_metric => {
            "Flagger's threshold: write `successCondition: result >= MIN && result <= MAX` (run `vigil convert` on the Canary)"
        }
        "templateRef" | "templateVariables" if in_metric => {
            "Flagger's metric reference: run `vigil convert` on the Canary and its MetricTemplates"
        }
        "stepWeight" | "stepWeights" | "maxWeight" | "interval" | "threshold" | "iterations"
            if in_canary =>
        {
            "Flagger's analysis settings: vigil writes the schedule out as `steps` (`setWeight`, `pause`) with a background `analysis` (run `vigil convert` on the Canary)"
        }
        "podTemplateHashValue" => {
            "vigil passes the revisions itself as the built-in arguments `canary-revision` (Argo's Latest) and `stable-revision` (Stable): drop this argument and use `{{args.canary-revision}}` in the template"
        }
        _ => return None,
    };
    Some(message)
}

/// `spec.metrics[0].provider` becomes `spec.metrics.provider`.
fn strip_indexes(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut depth = 0usize;
    for c in path.chars() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

/// Flagger's `{{ NAME }}` (or `{{ variables.NAME }}`) inside `{{` `}}`: the argument vigil
/// passes in its place, or `None` when `inner` is not one of Flagger's variables.
pub fn flagger_variable(inner: &str) -> Option<String> {
    let inner = inner.trim();
    if let Some(variable) = inner.strip_prefix("variables.") {
        return Some(variable.to_owned());
    }
    let inner = inner.strip_prefix('.').unwrap_or(inner);
    FLAGGER_VARIABLES
        .contains(&inner)
        .then(|| flagger_argument(inner).to_owned())
}

/// The vigil argument that replaces Flagger's variable `name`: the Rollout's name and
/// namespace are vigil's built-in `rollout` and `namespace`; the others keep their names.
pub fn flagger_argument(name: &str) -> &str {
    match name {
        "name" => "rollout",
        other => other,
    }
}

/// The hint for a `{{ … }}` that is one of Flagger's variables, for a placeholder error.
pub fn flagger_placeholder_hint(inner: &str) -> Option<String> {
    let argument = flagger_variable(inner)?;
    Some(format!(
        "Flagger's `{{{{ {} }}}}`: declare an argument and write `{{{{args.{argument}}}}}` (`vigil convert` does it)",
        inner.trim()
    ))
}

/// The label matchers of `query` whose value names the workload through the argument
/// `target` (e.g. `destination_workload=~"{{args.target}}"`), by label. Flagger's queries pick
/// the canary that way because its primary is a different Deployment (`<target>-primary`).
pub fn workload_name_selectors(query: &str, target_argument: &str) -> Vec<String> {
    let placeholder = format!("{{{{args.{target_argument}}}}}");
    let mut found = Vec::new();
    for label in WORKLOAD_NAME_LABELS {
        for op in ["=~\"", "=\"", "!~\"", "!=\""] {
            let pattern = format!("{label}{op}");
            let mut from = 0;
            while let Some(at) = query[from..].find(&pattern) {
                let start = from + at;
                let value_start = start + pattern.len();
                let value_end = query[value_start..]
                    .find('"')
                    .map_or(query.len(), |end| value_start + end);
                let preceded = start > 0
                    && query[..start]
                        .chars()
                        .next_back()
                        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
                if !preceded
                    && query[value_start..value_end].contains(&placeholder)
                    && !found.iter().any(|f| f == label)
                {
                    found.push((*label).to_owned());
                }
                from = value_end.min(query.len());
                if from == start {
                    break;
                }
            }
        }
    }
    found
}

/// The message for a query that selects the canary by the workload's name.
pub fn workload_name_message(labels: &[String]) -> String {
    format!(
        "selects the canary by workload name ({}): Flagger's primary is another Deployment (`<target>-primary`), but under vigil both revisions belong to one Rollout; select the canary by its Service (e.g. istio's `destination_service_name=\"{{{{args.canary-service}}}}\"`) or by the revision label (`{{{{args.canary-revision}}}}`, the pods' `vigil.dev/revision`)",
        labels
            .iter()
            .map(|l| format!("`{l}`"))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_index_is_removed_only_where_it_indexes_a_number() {
        assert_eq!(
            unindex_result("result[0] >= 0.99").as_deref(),
            Some("result >= 0.99")
        );
        assert_eq!(
            unindex_result("isNaN(result[0]) || result [ 0 ] < 5").as_deref(),
            Some("isNaN(result) || result < 5")
        );
        assert_eq!(unindex_result("result[0].value > 1"), None);
        assert_eq!(unindex_result("result >= 0.99"), None);
        assert_eq!(unindex_result("myresult[0] > 1"), None);
        assert_eq!(unindex_result("'result[0]' == result"), None);
    }

    #[test]
    fn integer_durations_read_as_seconds() {
        let forty = serde_json::Number::from(40u64);
        assert_eq!(integer_seconds(&forty).as_deref(), Some("40s"));
        assert!(integer_seconds_message(&forty).contains("write \"40s\""));
    }

    #[test]
    fn moved_fields_are_found_under_their_parent_only() {
        assert!(
            moved_field("spec.metrics[0].provider.prometheus", "headers")
                .is_some_and(|m| m.contains("auth.headers"))
        );
        assert!(moved_field("spec.metrics[0]", "headers").is_none());
        assert!(moved_field("spec.strategy.canary", "stepWeight").is_some());
        assert!(
            moved_field(
                "spec.strategy.canary.steps[0].analysis.args[0].valueFrom",
                "podTemplateHashValue"
            )
            .is_some()
        );
    }

    #[test]
    fn flagger_variables_map_to_arguments() {
        assert_eq!(flagger_variable(" target ").as_deref(), Some("target"));
        assert_eq!(flagger_variable("name").as_deref(), Some("rollout"));
        assert_eq!(
            flagger_variable("variables.direction").as_deref(),
            Some("direction")
        );
        assert_eq!(flagger_variable("args.x"), None);
    }

    #[test]
    fn workload_name_selectors_are_found_by_label() {
        let query = r#"sum(rate(istio_requests_total{destination_workload_namespace="{{args.namespace}}", destination_workload=~"{{args.target}}"}[1m]))"#;
        assert_eq!(
            workload_name_selectors(query, "target"),
            ["destination_workload"]
        );
        let pods = r#"x{kubernetes_pod_name=~"{{args.target}}-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)"}"#;
        assert_eq!(
            workload_name_selectors(pods, "target"),
            ["kubernetes_pod_name"]
        );
        assert!(
            workload_name_selectors(r#"x{service="{{args.canary-service}}"}"#, "target").is_empty()
        );
    }
}

//! `vigil lint`: checks vigil YAML files before they reach a cluster.
//!
//! Every document of a file is checked in three passes:
//!
//! 1. YAML syntax, `apiVersion` and `kind`;
//! 2. the raw document against the CRD's `openAPIV3Schema` from [`crate::api::all_crds`]: unknown
//!    fields (the API server prunes them silently, so a misspelt `succesCondition` would simply
//!    vanish), wrong types and missing required fields, each with the path of the field;
//! 3. the typed spec through [`validate_template`] / [`validate_rollout`](crate::rollout::validate_spec), the checks the
//!    controller runs too.
//!
//! Problems print one per line: `FILE: PATH: MESSAGE`. When a file holds several documents the
//! path is prefixed with the document's 0-based index: `FILE: [1] spec.metrics[0].name: ...`.
//! YAML syntax errors print as `FILE:LINE:COLUMN: MESSAGE`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::LazyLock;

use serde_json::Value as Schema;
use serde_norway::Value;

use crate::analysis::template::{Problem, suggest, validate_template};
use crate::api::{
    AnalysisRunSpec, AnalysisTemplateSpec, ClusterAnalysisTemplateSpec, GROUP, RolloutSpec,
    VERSION, all_crds,
};
use crate::rollout::validate_spec as validate_rollout;

mod role_selector;
pub use role_selector::{ROLE_SELECTOR_NOTE, selects_by_role};

/// The vigil kinds, in the order they are suggested.
const KINDS: [&str; 4] = [
    "Rollout",
    "AnalysisTemplate",
    "ClusterAnalysisTemplate",
    "AnalysisRun",
];

/// Fields of `metadata` (Kubernetes' ObjectMeta) a manifest may set.
const METADATA_FIELDS: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "labels",
    "annotations",
    "finalizers",
    "ownerReferences",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
];

/// One problem found in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LintProblem {
    /// The file, as given on the command line.
    pub file: String,
    /// 0-based index of the document in the file; `None` when the file holds one document (or
    /// the problem is not in a document, e.g. a syntax error).
    pub document: Option<usize>,
    /// Line and column (1-based) for YAML syntax errors.
    pub position: Option<(usize, usize)>,
    /// Path of the field, e.g. `spec.metrics[0].successCondition`; empty for the whole file.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for LintProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some((line, column)) = self.position {
            return write!(f, "{}:{line}:{column}: {}", self.file, self.message);
        }
        write!(f, "{}: ", self.file)?;
        if let Some(document) = self.document {
            write!(f, "[{document}] ")?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        write!(f, "{}", self.message)
    }
}

/// A remark on a file that is not a problem: it leaves the exit code at 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LintNote {
    /// The file, as given on the command line.
    pub file: String,
    /// 0-based index of the document, when the file holds several.
    pub document: Option<usize>,
    /// Path of the field the note is about.
    pub path: String,
    /// What to know.
    pub message: String,
}

impl fmt::Display for LintNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.file)?;
        if let Some(document) = self.document {
            write!(f, "[{document}] ")?;
        }
        write!(f, "{}: note: {}", self.path, self.message)
    }
}

/// What a metric without `provider.prometheus.address` queries.
pub const DEFAULT_ADDRESS_NOTE: &str = "not set: the default Prometheus applies \
    (`vigil controller --prometheus URL` or VIGIL_PROMETHEUS; `--prometheus URL` of \
    `vigil analyze` and `vigil run`); with none given, the run ends in Error";

/// What `provider.web.insecure: true` gives away.
pub const INSECURE_NOTE: &str = "warning: TLS certificate verification is off: anyone on \
    the network path can read the request (its credentials included) and forge the answer \
    that decides the rollout; give the server's CA in `auth.caBundle` instead";

/// What the built-in `baseline-revision` argument selects.
pub const BASELINE_REVISION_NOTE: &str = "built in: the revision of the fair baseline \
    (`<stable revision>-baseline`, its pods labelled `vigil.dev/role: baseline`), which runs \
    only for a Rollout with `canary.baseline.enabled: true`; with any other, the queries \
    selecting it find no series (noData)";

/// The notes on the text of one file: each template argument `baseline-revision` (see
/// [`BASELINE_REVISION_NOTE`]), each metric of a template or run that names no
/// Prometheus address, since the default given on the command line then applies, and each
/// web metric that turns TLS verification off, and each Prometheus query selecting an arm
/// by `role` ([`ROLE_SELECTOR_NOTE`]) (warnings). Never
/// panics; text that does not parse has no notes (its problems say why).
pub fn lint_notes(path: &Path, text: &str) -> Vec<LintNote> {
    let Ok(documents) = crate::manifest::documents(text) else {
        return Vec::new();
    };
    let non_empty = documents.iter().filter(|d| !d.is_null()).count();
    let api_version = format!("{GROUP}/{VERSION}");
    let mut notes = Vec::new();
    for (index, document) in documents.iter().enumerate() {
        let is_vigil = document.get("apiVersion").and_then(Value::as_str) == Some(&api_version);
        let kind = document.get("kind").and_then(Value::as_str);
        let has_metrics = matches!(
            kind,
            Some("AnalysisTemplate" | "ClusterAnalysisTemplate" | "AnalysisRun")
        );
        if !is_vigil || !has_metrics {
            continue;
        }
        if let Some(Value::Sequence(args)) = document.get("spec").and_then(|spec| spec.get("args"))
        {
            for (i, arg) in args.iter().enumerate() {
                let builtin = arg.get("name").and_then(Value::as_str) == Some("baseline-revision")
                    && arg.get("value").is_none();
                if builtin && kind != Some("AnalysisRun") {
                    notes.push(LintNote {
                        file: path.display().to_string(),
                        document: (non_empty > 1).then_some(index),
                        path: format!("spec.args[{i}]"),
                        message: BASELINE_REVISION_NOTE.to_owned(),
                    });
                }
            }
        }
        let metrics = document.get("spec").and_then(|spec| spec.get("metrics"));
        let Some(Value::Sequence(metrics)) = metrics else {
            continue;
        };
        for (i, metric) in metrics.iter().enumerate() {
            let web = metric.get("provider").and_then(|p| p.get("web"));
            if web.and_then(|w| w.get("insecure")) == Some(&Value::Bool(true)) {
                notes.push(LintNote {
                    file: path.display().to_string(),
                    document: (non_empty > 1).then_some(index),
                    path: format!("spec.metrics[{i}].provider.web.insecure"),
                    message: INSECURE_NOTE.to_owned(),
                });
            }
            for field in role_selector::role_selecting_fields(metric) {
                notes.push(LintNote {
                    file: path.display().to_string(),
                    document: (non_empty > 1).then_some(index),
                    path: format!("spec.metrics[{i}].{field}"),
                    message: ROLE_SELECTOR_NOTE.to_owned(),
                });
            }
            let prometheus = metric.get("provider").and_then(|p| p.get("prometheus"));
            if prometheus.is_some_and(|p| p.is_mapping() && p.get("address").is_none()) {
                notes.push(LintNote {
                    file: path.display().to_string(),
                    document: (non_empty > 1).then_some(index),
                    path: format!("spec.metrics[{i}].provider.prometheus.address"),
                    message: DEFAULT_ADDRESS_NOTE.to_owned(),
                });
            }
        }
    }
    notes
}

/// The `openAPIV3Schema` of each kind, as JSON, built once.
static SCHEMAS: LazyLock<BTreeMap<String, Schema>> = LazyLock::new(|| {
    all_crds()
        .into_iter()
        .filter_map(|crd| {
            let kind = crd.spec.names.kind.clone();
            let schema = crd
                .spec
                .versions
                .iter()
                .find(|v| v.name == VERSION)?
                .schema
                .as_ref()?
                .open_api_v3_schema
                .as_ref()?;
            serde_json::to_value(schema).ok().map(|s| (kind, s))
        })
        .collect()
});

/// Lints the text of one file. `path` is only used to name the file in problems. Never panics,
/// whatever the text.
pub fn lint_file(path: &Path, text: &str) -> Vec<LintProblem> {
    let file = path.display().to_string();
    let mut problems = Vec::new();
    let documents = match crate::manifest::documents(text) {
        Ok(documents) => documents,
        Err(crate::manifest::ReadDocumentError { source: error, .. }) => {
            let position = error.location().map(|l| (l.line(), l.column()));
            problems.push(LintProblem {
                file: file.clone(),
                document: None,
                position: position.or(Some((1, 1))),
                path: String::new(),
                message: format!("invalid YAML: {}", yaml_message(&error)),
            });
            // The parser cannot resume after a syntax error.
            return problems;
        }
    };
    let non_empty = documents.iter().filter(|d| !d.is_null()).count();
    if non_empty == 0 {
        problems.push(LintProblem {
            file,
            document: None,
            position: None,
            path: String::new(),
            message: "no YAML document: nothing to check".to_owned(),
        });
        return problems;
    }
    for (index, document) in documents.iter().enumerate() {
        if document.is_null() {
            continue;
        }
        let mut found = lint_document(document);
        found.sort_by(|a, b| natural_path_cmp(&a.path, &b.path));
        found.dedup();
        problems.extend(found.into_iter().map(|p| LintProblem {
            file: file.clone(),
            document: (non_empty > 1).then_some(index),
            position: None,
            path: p.path,
            message: p.message,
        }));
    }
    problems
}

/// Orders paths so that `steps[2]` comes before `steps[10]`, keeping problems in file order.
fn natural_path_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    fn chunks(s: &str) -> Vec<Result<u64, &str>> {
        let mut out = Vec::new();
        let mut rest = s;
        while !rest.is_empty() {
            let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
            if digits > 0 {
                out.push(rest[..digits].parse().map_err(|_| &rest[..digits]));
                rest = &rest[digits..];
            } else {
                let text =
                    rest.len() - rest.trim_start_matches(|c: char| !c.is_ascii_digit()).len();
                out.push(Err(&rest[..text]));
                rest = &rest[text..];
            }
        }
        out
    }
    fn key<'a>(r: &Result<u64, &'a str>) -> (u8, u64, &'a str) {
        match r {
            Ok(n) => (0, *n, ""),
            Err(s) => (1, 0, s),
        }
    }
    let (ca, cb) = (chunks(a), chunks(b));
    ca.iter().map(key).cmp(cb.iter().map(key))
}

/// serde_norway's message without its trailing position (printed separately).
fn yaml_message(error: &serde_norway::Error) -> String {
    let text = error.to_string();
    let text = match text.find(" at line ") {
        Some(at) => &text[..at],
        None => &text,
    };
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null (empty)".to_owned(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string {s:?}"),
        Value::Sequence(_) => "a list".to_owned(),
        Value::Mapping(_) => "a map".to_owned(),
        Value::Tagged(t) => format!("a value tagged {}", t.tag),
    }
}

/// Lints one parsed document; paths have no document prefix.
fn lint_document(document: &Value) -> Vec<Problem> {
    let mut problems = Vec::new();
    let Value::Mapping(map) = document else {
        problems.push(problem(
            "",
            format!(
                "expected a Kubernetes resource (a map with apiVersion and kind), found {}",
                describe(document)
            ),
        ));
        return problems;
    };
    if let Some(found) = crate::notify::lint::lint_document(document) {
        return found;
    }
    let api_version = map.get("apiVersion");
    let kind = map.get("kind");
    let expected_api = format!("{GROUP}/{VERSION}");
    match api_version {
        None => {
            problems.push(problem(
                "apiVersion",
                format!("missing; vigil resources use {expected_api}"),
            ));
            return problems;
        }
        Some(Value::String(v)) if *v == expected_api => {}
        Some(Value::String(v)) => {
            let message = if v.starts_with(&format!("{GROUP}/")) {
                format!("`{v}` is not served by this vigil; use {expected_api}")
            } else if let Some(origin) =
                crate::convert::origin(v, kind.and_then(Value::as_str).unwrap_or_default())
            {
                foreign_document(v, origin, &expected_api)
            } else if suggest(v, [expected_api.as_str()]).is_some() {
                format!("`{v}` is not a known API (did you mean `{expected_api}`?)")
            } else {
                // Another API's object (a Service, an HTTPRoute) kept in the same file: not
                // vigil's to check.
                return problems;
            };
            problems.push(problem("apiVersion", message));
            return problems;
        }
        Some(other) => {
            problems.push(problem(
                "apiVersion",
                format!("expected a string, found {}", describe(other)),
            ));
            return problems;
        }
    }
    let kind = match kind {
        Some(Value::String(k)) if KINDS.contains(&k.as_str()) => k.clone(),
        Some(Value::String(k)) => {
            let hint = suggest(k, KINDS)
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            problems.push(problem(
                "kind",
                format!(
                    "`{k}` is not a vigil kind; expected one of {}{hint}",
                    KINDS.join(", ")
                ),
            ));
            return problems;
        }
        None => {
            problems.push(problem(
                "kind",
                format!("missing; expected one of {}", KINDS.join(", ")),
            ));
            return problems;
        }
        Some(other) => {
            problems.push(problem(
                "kind",
                format!("expected a string, found {}", describe(other)),
            ));
            return problems;
        }
    };

    check_metadata(map.get("metadata"), &kind, &mut problems);
    if kind == "Rollout" {
        problems.extend(crate::notify::lint::rollout_annotations(
            map.get("metadata"),
        ));
    }

    let Some(schema) = SCHEMAS.get(&kind) else {
        problems.push(problem("kind", format!("no schema for `{kind}`")));
        return problems;
    };
    let structural_before = problems.len();
    check_root(map, schema, &mut problems);
    let structural = problems.len() > structural_before;

    let Some(spec) = map.get("spec") else {
        return problems;
    };
    let typed = match kind.as_str() {
        "Rollout" => {
            serde_norway::from_value::<RolloutSpec>(spec.clone()).map(|s| validate_rollout(&s))
        }
        "AnalysisTemplate" => serde_norway::from_value::<AnalysisTemplateSpec>(spec.clone())
            .map(|s| validate_template(&s)),
        "ClusterAnalysisTemplate" => {
            serde_norway::from_value::<ClusterAnalysisTemplateSpec>(spec.clone())
                .map(|s| validate_template(&s.template))
        }
        _ => serde_norway::from_value::<AnalysisRunSpec>(spec.clone()).map(|s| {
            validate_template(&AnalysisTemplateSpec {
                args: s.args,
                metrics: s.metrics,
                scoring: s.scoring,
            })
        }),
    };
    match typed {
        Ok(found) => problems.extend(found),
        // The schema pass already said what is wrong, with a better path; the conditions'
        // traps are still worth naming, since the typed pass cannot reach them.
        Err(_) if structural => condition_traps(spec, &mut problems),
        Err(error) => problems.push(problem("spec", yaml_message(&error))),
    }
    problems
}

/// The `result[0]` trap in the raw conditions of `spec.metrics`, for a spec the typed pass
/// could not read.
fn condition_traps(spec: &Value, problems: &mut Vec<Problem>) {
    let Some(Value::Sequence(metrics)) = spec.get("metrics") else {
        return;
    };
    for (i, metric) in metrics.iter().enumerate() {
        for field in ["successCondition", "failureCondition"] {
            if let Some(Value::String(condition)) = metric.get(field)
                && let Some(message) = crate::convert::traps::indexed_scalar_result(condition)
            {
                problems.push(problem(format!("spec.metrics[{i}].{field}"), message));
            }
        }
    }
}

/// The message for an Argo Rollouts or Flagger document: what it is and how to bring it over.
fn foreign_document(
    api_version: &str,
    origin: crate::convert::Origin,
    expected_api: &str,
) -> String {
    use crate::convert::Origin;
    let what = match origin {
        Origin::ArgoRollout => "an Argo Rollouts Rollout",
        Origin::ArgoTemplate(false) => "an Argo Rollouts AnalysisTemplate",
        Origin::ArgoTemplate(true) => "an Argo Rollouts ClusterAnalysisTemplate",
        Origin::ArgoOther => "an Argo Rollouts resource",
        Origin::FlaggerCanary => "a Flagger Canary",
        Origin::FlaggerMetricTemplate => "a Flagger MetricTemplate",
        Origin::FlaggerOther => "a Flagger resource",
    };
    format!(
        "`{api_version}`: {what}, not vigil's {expected_api}; run `vigil convert FILE` to translate it (it names every field it cannot map)"
    )
}

fn problem(path: impl Into<String>, message: impl Into<String>) -> Problem {
    Problem {
        path: path.into(),
        message: message.into(),
    }
}

fn check_metadata(metadata: Option<&Value>, kind: &str, problems: &mut Vec<Problem>) {
    let Some(metadata) = metadata else {
        problems.push(problem(
            "metadata",
            "missing; every resource needs metadata.name",
        ));
        return;
    };
    let Value::Mapping(map) = metadata else {
        problems.push(problem(
            "metadata",
            format!("expected a map, found {}", describe(metadata)),
        ));
        return;
    };
    for (key, value) in map {
        let Value::String(key) = key else {
            problems.push(problem(
                "metadata",
                format!("key {} is not a string", describe(key)),
            ));
            continue;
        };
        if !METADATA_FIELDS.contains(&key.as_str()) {
            problems.push(unknown_field(
                "metadata",
                key,
                METADATA_FIELDS.iter().copied(),
            ));
            continue;
        }
        let path = format!("metadata.{key}");
        match key.as_str() {
            "labels" | "annotations" => match value {
                Value::Mapping(entries) => {
                    for (k, v) in entries {
                        if !matches!(v, Value::String(_)) {
                            problems.push(problem(
                                format!("{path}{}", key_path(k)),
                                format!("expected a string, found {} (quote it)", describe(v)),
                            ));
                        }
                    }
                }
                Value::Null => {}
                other => problems.push(problem(
                    path,
                    format!("expected a map, found {}", describe(other)),
                )),
            },
            "name" | "namespace" | "generateName" if !matches!(value, Value::String(_)) => {
                problems.push(problem(
                    path,
                    format!("expected a string, found {}", describe(value)),
                ));
            }
            _ => {}
        }
    }
    let has_name = matches!(map.get("name"), Some(Value::String(s)) if !s.is_empty())
        || matches!(map.get("generateName"), Some(Value::String(s)) if !s.is_empty());
    if !has_name {
        problems.push(problem(
            "metadata.name",
            "missing; every resource needs a name",
        ));
    }
    if kind == "ClusterAnalysisTemplate" && map.get("namespace").is_some() {
        problems.push(problem(
            "metadata.namespace",
            "a ClusterAnalysisTemplate is cluster-scoped and has no namespace; remove it",
        ));
    }
}

fn key_path(key: &Value) -> String {
    match key {
        Value::String(k)
            if !k.is_empty()
                && k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') =>
        {
            format!(".{k}")
        }
        Value::String(k) => format!("[{k:?}]"),
        other => format!("[{}]", describe(other)),
    }
}

fn unknown_field<'a>(parent: &str, key: &str, known: impl Iterator<Item = &'a str>) -> Problem {
    let known: Vec<&str> = known.collect();
    let moved = crate::convert::traps::moved_field(parent, key);
    let hint = match moved
        .map(|m| format!("; {m}"))
        .or_else(|| suggest(key, known.iter().copied()).map(|s| format!("; did you mean `{s}`?")))
    {
        Some(hint) => hint,
        None => format!(
            "; known fields here: {}",
            if known.len() > 12 {
                format!("{}, ...", known[..12].join(", "))
            } else {
                known.join(", ")
            }
        ),
    };
    let path = if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    };
    problem(
        path,
        format!("unknown field `{key}` (the API server would drop it silently){hint}"),
    )
}

/// Checks the top level: `apiVersion`, `kind` and `metadata` are implicit in every CRD.
fn check_root(map: &serde_norway::Mapping, schema: &Schema, problems: &mut Vec<Problem>) {
    let properties = schema.get("properties").and_then(Schema::as_object);
    let mut known: Vec<&str> = vec!["apiVersion", "kind", "metadata"];
    known.extend(properties.iter().flat_map(|p| p.keys().map(String::as_str)));
    for (key, value) in map {
        let Value::String(key) = key else {
            problems.push(problem(
                "",
                format!("key {} is not a string", describe(key)),
            ));
            continue;
        };
        if matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
            continue;
        }
        match properties.and_then(|p| p.get(key)) {
            Some(child) => check_value(value, child, key, problems),
            None => problems.push(unknown_field("", key, known.iter().copied())),
        }
    }
    check_required(map, schema, "", problems);
}

fn check_required(
    map: &serde_norway::Mapping,
    schema: &Schema,
    path: &str,
    problems: &mut Vec<Problem>,
) {
    for required in schema
        .get("required")
        .and_then(Schema::as_array)
        .into_iter()
        .flatten()
        .filter_map(Schema::as_str)
    {
        if map.get(required).is_none() {
            let at = if path.is_empty() {
                required.to_owned()
            } else {
                format!("{path}.{required}")
            };
            problems.push(problem(at, "missing required field"));
        }
    }
}

/// Recursion bound: CRD schemas are far shallower; deeper values are not walked.
const MAX_DEPTH: usize = 64;

fn check_value(value: &Value, schema: &Schema, path: &str, problems: &mut Vec<Problem>) {
    check_value_at(value, schema, path, problems, 0);
}

fn check_value_at(
    value: &Value,
    schema: &Schema,
    path: &str,
    problems: &mut Vec<Problem>,
    depth: usize,
) {
    if depth > MAX_DEPTH {
        return;
    }
    let flag = |name: &str| schema.get(name).and_then(Schema::as_bool) == Some(true);
    if let Value::Tagged(tagged) = value {
        problems.push(problem(
            path,
            format!(
                "YAML tag {} is not allowed in a Kubernetes resource",
                tagged.tag
            ),
        ));
        return;
    }
    if value.is_null() {
        if !flag("nullable") && schema.get("type").is_some() {
            problems.push(problem(
                path,
                format!(
                    "empty (null), but a value of type {} is expected",
                    schema.get("type").and_then(Schema::as_str).unwrap_or("?")
                ),
            ));
        }
        return;
    }
    if flag("x-kubernetes-int-or-string") {
        let ok = matches!(value, Value::String(_))
            || matches!(value, Value::Number(n) if n.is_i64() || n.is_u64());
        if !ok {
            problems.push(problem(
                path,
                format!("expected an integer or a string, found {}", describe(value)),
            ));
        }
        return;
    }
    match schema.get("type").and_then(Schema::as_str) {
        Some("object") => check_object(value, schema, path, problems, depth),
        Some("array") => check_array(value, schema, path, problems, depth),
        Some("string") => check_string(value, schema, path, problems),
        Some("integer") => check_integer(value, schema, path, problems),
        Some("number") if !matches!(value, Value::Number(_)) => {
            problems.push(problem(
                path,
                format!("expected a number, found {}", describe(value)),
            ));
        }
        Some("boolean") if !matches!(value, Value::Bool(_)) => {
            let (parent, key) = path.rsplit_once('.').unwrap_or(("", path));
            let hint = crate::convert::traps::moved_field(parent, key)
                .map(|m| format!("; {m}"))
                .unwrap_or_default();
            problems.push(problem(
                path,
                format!("expected true or false, found {}{hint}", describe(value)),
            ));
        }
        _ => {}
    }
}

/// A value whose schema type is `object`: each field against its property (or the
/// `additionalProperties` schema), unknown fields named, required fields present.
fn check_object(
    value: &Value,
    schema: &Schema,
    path: &str,
    problems: &mut Vec<Problem>,
    depth: usize,
) {
    let Value::Mapping(map) = value else {
        problems.push(problem(
            path,
            format!("expected a map of fields, found {}", describe(value)),
        ));
        return;
    };
    let preserve = schema
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Schema::as_bool)
        == Some(true);
    let properties = schema.get("properties").and_then(Schema::as_object);
    let additional = schema.get("additionalProperties");
    for (key, child) in map {
        let Value::String(name) = key else {
            problems.push(problem(
                path,
                format!("key {} is not a string", describe(key)),
            ));
            continue;
        };
        let child_path = format!("{path}{}", key_path(key));
        if let Some(child_schema) = properties.and_then(|p| p.get(name)) {
            check_value_at(child, child_schema, &child_path, problems, depth + 1);
        } else if let Some(extra) = additional.filter(|a| a.is_object()) {
            check_value_at(child, extra, &child_path, problems, depth + 1);
        } else if additional.and_then(Schema::as_bool) == Some(true) || preserve {
            // Free-form: anything goes.
        } else if let Some(props) = properties {
            problems.push(unknown_field(path, name, props.keys().map(String::as_str)));
        }
    }
    check_required(map, schema, path, problems);
}

/// A value whose schema type is `array`: each item against `items`.
fn check_array(
    value: &Value,
    schema: &Schema,
    path: &str,
    problems: &mut Vec<Problem>,
    depth: usize,
) {
    let Value::Sequence(items) = value else {
        problems.push(problem(
            path,
            format!("expected a list, found {}", describe(value)),
        ));
        return;
    };
    if let Some(item_schema) = schema.get("items") {
        for (i, item) in items.iter().enumerate() {
            check_value_at(
                item,
                item_schema,
                &format!("{path}[{i}]"),
                problems,
                depth + 1,
            );
        }
    }
}

/// A value whose schema type is `string`, within its `enum` when there is one.
fn check_string(value: &Value, schema: &Schema, path: &str, problems: &mut Vec<Problem>) {
    let duration = schema.get("pattern").and_then(Schema::as_str)
        == Some(crate::api::duration::DURATION_PATTERN);
    if let (true, Value::Number(n)) = (duration, value)
        && let Some(seconds) = n.as_u64()
    {
        problems.push(problem(
            path,
            crate::convert::traps::integer_seconds_message(&seconds.into()),
        ));
        return;
    }
    let Value::String(text) = value else {
        let hint = match value {
            Value::Number(_) | Value::Bool(_) => " (quote it to make it a string)",
            _ => "",
        };
        problems.push(problem(
            path,
            format!("expected a string, found {}{hint}", describe(value)),
        ));
        return;
    };
    if let Some(allowed) = schema.get("enum").and_then(Schema::as_array) {
        let allowed: Vec<&str> = allowed.iter().filter_map(Schema::as_str).collect();
        if !allowed.contains(&text.as_str()) {
            let hint = suggest(text, allowed.iter().copied())
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            problems.push(problem(
                path,
                format!("`{text}` is not one of {}{hint}", allowed.join(", ")),
            ));
        }
    }
}

/// A value whose schema type is `integer`, within 32 bits for `format: int32`.
fn check_integer(value: &Value, schema: &Schema, path: &str, problems: &mut Vec<Problem>) {
    let Value::Number(n) = value else {
        problems.push(problem(
            path,
            format!("expected an integer, found {}", describe(value)),
        ));
        return;
    };
    let int32 = schema.get("format").and_then(Schema::as_str) == Some("int32");
    match n.as_i64() {
        None if n.is_u64() && !int32 => {}
        None => problems.push(problem(
            path,
            format!("expected an integer, found {}", describe(value)),
        )),
        Some(i) if int32 && i32::try_from(i).is_err() => problems.push(problem(
            path,
            format!("{i} does not fit in a 32-bit integer"),
        )),
        Some(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lint(text: &str) -> Vec<String> {
        lint_file(Path::new("f.yaml"), text)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    const TEMPLATE: &str = r#"
apiVersion: vigil.dev/v1alpha1
kind: AnalysisTemplate
metadata:
  name: errors
spec:
  args:
    - name: service
  metrics:
    - name: error-rate
      interval: 1m
      count: 5
      successCondition: result < 0.01
      provider:
        prometheus:
          address: http://prometheus:9090
          query: sum(rate(x_total{service="{{args.service}}",code=~"5.."}[5m])) / sum(rate(x_total{service="{{args.service}}"}[5m]))
"#;

    #[test]
    fn a_valid_template_is_clean() {
        assert_eq!(lint(TEMPLATE), Vec::<String>::new());
    }

    #[test]
    fn unknown_fields_are_named_with_a_suggestion() {
        let text = TEMPLATE.replace("successCondition", "succesCondition");
        let out = lint(&text);
        assert!(
            out.contains(&"f.yaml: spec.metrics[0].succesCondition: unknown field `succesCondition` (the API server would drop it silently); did you mean `successCondition`?".to_owned()),
            "{out:#?}"
        );
    }

    #[test]
    fn a_default_value_written_out_is_not_unknown() {
        let text = TEMPLATE.replace("count: 5", "count: 5\n      dryRun: false");
        assert_eq!(lint(&text), Vec::<String>::new());
    }

    #[test]
    fn types_are_checked_with_the_path() {
        let text = TEMPLATE.replace("count: 5", "count: five");
        assert_eq!(
            lint(&text),
            ["f.yaml: spec.metrics[0].count: expected an integer, found the string \"five\""]
        );
        let text = TEMPLATE.replace("- name: service", "- name: service\n      value: 8080");
        assert_eq!(
            lint(&text),
            [
                "f.yaml: spec.args[0].value: expected a string, found the number 8080 (quote it to make it a string)"
            ]
        );
    }

    #[test]
    fn enums_are_checked() {
        let text = TEMPLATE.replace("count: 5", "count: 5\n      noData: passs");
        assert_eq!(
            lint(&text),
            [
                "f.yaml: spec.metrics[0].noData: `passs` is not one of inconclusive, fail, pass (did you mean `pass`?)"
            ]
        );
    }

    #[test]
    fn several_documents_are_indexed() {
        let text = format!(
            "{TEMPLATE}---\n{}",
            TEMPLATE.replace("count: 5", "count: 0")
        );
        let out = lint(&text);
        assert_eq!(out.len(), 1, "{out:#?}");
        assert!(
            out[0].starts_with("f.yaml: [1] spec.metrics[0].count: 0: "),
            "{out:#?}"
        );
    }

    #[test]
    fn syntax_errors_give_the_line() {
        let out = lint("apiVersion: vigil.dev/v1alpha1\nkind: [\n");
        assert_eq!(out.len(), 1, "{out:#?}");
        assert!(out[0].starts_with("f.yaml:3:1: invalid YAML: "), "{out:#?}");
    }

    #[test]
    fn unknown_kind_and_foreign_api() {
        let out = lint("apiVersion: vigil.dev/v1alpha1\nkind: Rolout\nmetadata: {name: x}\n");
        assert_eq!(
            out,
            [
                "f.yaml: kind: `Rolout` is not a vigil kind; expected one of Rollout, AnalysisTemplate, ClusterAnalysisTemplate, AnalysisRun (did you mean `Rollout`?)"
            ]
        );
        let out = lint("apiVersion: argoproj.io/v1alpha1\nkind: Rollout\n");
        assert!(
            out[0].starts_with(
                "f.yaml: apiVersion: `argoproj.io/v1alpha1`: an Argo Rollouts Rollout"
            )
        );
        assert!(out[0].contains("run `vigil convert FILE`"));
    }

    #[test]
    fn empty_files_and_scalars() {
        assert_eq!(lint(""), ["f.yaml: no YAML document: nothing to check"]);
        assert_eq!(
            lint("42"),
            [
                "f.yaml: expected a Kubernetes resource (a map with apiVersion and kind), found the number 42"
            ]
        );
    }

    #[test]
    fn pod_template_fields_are_checked_too() {
        let rollout = r#"
apiVersion: vigil.dev/v1alpha1
kind: Rollout
metadata:
  name: web
spec:
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
        - name: web
          image: web:2
          imagePullPolicey: Always
          resources:
            limits: {cpu: 1, memory: 128Mi}
          ports:
            - containerPort: 8080
  strategy:
    canary:
      steps:
        - setWeight: 20
"#;
        assert_eq!(
            lint(rollout),
            [
                "f.yaml: spec.template.spec.containers[0].imagePullPolicey: unknown field `imagePullPolicey` (the API server would drop it silently); did you mean `imagePullPolicy`?"
            ]
        );
    }

    #[test]
    fn paths_sort_naturally() {
        assert!(natural_path_cmp("steps[2]", "steps[10]").is_lt());
        assert!(natural_path_cmp("a", "a.b").is_lt());
    }
}

//! `vigil convert`: Argo Rollouts (`Rollout`, `AnalysisTemplate`, `ClusterAnalysisTemplate`) and
//! Flagger (`Canary`, `MetricTemplate`) documents into vigil's, as typed API objects so that the
//! output always deserializes, plus one [`Unmapped`] line per field that could not be carried
//! over, with its path and why.
//!
//! Pure: documents in, documents and lines out. The CLI (`cli::convert`) reads the files with
//! the one YAML loader (`manifest::documents`) and prints.
//!
//! The traps a hand translation hits are rules in [`traps`], shared with `vigil lint`.

mod argo;
mod argo_blue_green;
pub mod expr;
mod fields;
mod flagger;
mod flagger_webhooks;
pub mod traps;

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;

use crate::api::{AnalysisTemplate, ClusterAnalysisTemplate, Rollout};

/// Most documents one conversion reads: far beyond a real repository of manifests, and it
/// bounds the work and the report.
pub const MAX_DOCUMENTS: usize = 10_000;

/// One input document, with where it came from.
#[derive(Debug, Clone)]
pub struct Source {
    /// The file, as named on the command line (`-` for stdin).
    pub file: String,
    /// 0-based index of the document in the file.
    pub index: usize,
    /// The document.
    pub document: Value,
}

/// A field that could not be mapped: where it is and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unmapped {
    /// The file of the document.
    pub file: String,
    /// 0-based index of the document in its file.
    pub index: usize,
    /// Path of the field in the source document, e.g. `spec.metrics[0].provider.web`.
    pub path: String,
    /// Why, and what to do instead.
    pub reason: String,
}

impl fmt::Display for Unmapped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: [{}] ", self.file, self.index)?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        write!(f, "{}", self.reason)
    }
}

/// One output document.
#[derive(Debug, Clone)]
pub enum Converted {
    /// A Rollout.
    Rollout(Box<Rollout>),
    /// An AnalysisTemplate.
    AnalysisTemplate(Box<AnalysisTemplate>),
    /// A ClusterAnalysisTemplate.
    ClusterAnalysisTemplate(Box<ClusterAnalysisTemplate>),
    /// A document of another API (a Service, an HTTPRoute), passed through unchanged.
    Other(Value),
}

/// The result of a conversion.
#[derive(Debug, Clone, Default)]
pub struct Conversion {
    /// The output documents, in input order.
    pub documents: Vec<Converted>,
    /// Every field that could not be mapped; empty when everything mapped.
    pub unmapped: Vec<Unmapped>,
}

/// Why the output could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// A converted document did not serialize to YAML.
    #[error("write document {index} as YAML: {source}")]
    WriteYaml {
        /// Index in the output.
        index: usize,
        /// The serializer's error.
        source: serde_norway::Error,
    },
}

/// Notes collected while converting one document: the unmapped fields, by path.
#[derive(Debug, Default)]
pub(crate) struct Notes(Vec<(String, String)>);

impl Notes {
    /// Records that the field at `path` could not be mapped, and why.
    pub(crate) fn unmapped(&mut self, path: impl Into<String>, reason: impl Into<String>) {
        self.0.push((path.into(), reason.into()));
    }
}

/// What the whole input holds that one document's conversion needs: templates by name (for
/// the revision arguments a Rollout renames), Flagger MetricTemplates and Deployments.
#[derive(Debug, Default)]
pub(crate) struct Inputs<'a> {
    /// Argo templates named by the Rollouts' `podTemplateHashValue` arguments: (template name,
    /// cluster scope) → argument → the vigil built-in it becomes.
    pub(crate) revision_args: BTreeMap<(String, bool), BTreeMap<String, &'static str>>,
    /// Argo templates present in the input: (name, cluster scope).
    pub(crate) argo_templates: Vec<(String, bool)>,
    /// Flagger MetricTemplates: (namespace, name) → document.
    pub(crate) metric_templates: BTreeMap<(String, String), &'a Value>,
    /// Deployments: (namespace, name) → document.
    pub(crate) deployments: BTreeMap<(String, String), &'a Value>,
    /// Deployments a Canary takes its pod template from (not written out).
    pub(crate) adopted: Vec<(String, String)>,
}

/// Which project a document belongs to, by `apiVersion` and `kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Argo Rollouts' `Rollout`.
    ArgoRollout,
    /// Argo Rollouts' `AnalysisTemplate` or `ClusterAnalysisTemplate` (the flag: cluster).
    ArgoTemplate(bool),
    /// Another Argo Rollouts kind (AnalysisRun, Experiment).
    ArgoOther,
    /// Flagger's `Canary`.
    FlaggerCanary,
    /// Flagger's `MetricTemplate`.
    FlaggerMetricTemplate,
    /// Another Flagger kind (AlertProvider).
    FlaggerOther,
}

/// The project a document comes from, or `None` for anything else (vigil's own included).
pub fn origin(api_version: &str, kind: &str) -> Option<Origin> {
    if api_version.starts_with("argoproj.io/") {
        return Some(match kind {
            "Rollout" => Origin::ArgoRollout,
            "AnalysisTemplate" => Origin::ArgoTemplate(false),
            "ClusterAnalysisTemplate" => Origin::ArgoTemplate(true),
            _ => Origin::ArgoOther,
        });
    }
    if api_version.starts_with("flagger.app/") {
        return Some(match kind {
            "Canary" => Origin::FlaggerCanary,
            "MetricTemplate" => Origin::FlaggerMetricTemplate,
            _ => Origin::FlaggerOther,
        });
    }
    None
}

fn origin_of(document: &Value) -> Option<Origin> {
    origin(
        document
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default(),
        document
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default(),
    )
}

/// `metadata.namespace` (empty when absent) and `metadata.name` of a document.
pub(crate) fn namespace_and_name(document: &Value) -> (String, String) {
    let metadata = document.get("metadata");
    let field = |key: &str| {
        metadata
            .and_then(|m| m.get(key))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    (field("namespace"), field("name"))
}

/// Converts every document of `sources`.
pub fn convert(sources: &[Source]) -> Conversion {
    let mut conversion = Conversion::default();
    let sources = match sources.get(..MAX_DOCUMENTS) {
        Some(head) if sources.len() > MAX_DOCUMENTS => {
            let first_dropped = &sources[MAX_DOCUMENTS];
            conversion.unmapped.push(Unmapped {
                file: first_dropped.file.clone(),
                index: first_dropped.index,
                path: String::new(),
                reason: format!(
                    "this and the {} documents after it were not read: one conversion reads at most {MAX_DOCUMENTS} (MAX_DOCUMENTS)",
                    sources.len() - MAX_DOCUMENTS - 1
                ),
            });
            head
        }
        _ => sources,
    };
    let mut inputs = collect_inputs(sources);
    for source in sources {
        let mut notes = Notes::default();
        let converted = convert_one(source, sources, &mut inputs, &mut notes);
        for document in &converted {
            check_converted(document, &mut notes);
        }
        conversion.documents.extend(converted);
        conversion
            .unmapped
            .extend(notes.0.into_iter().map(|(path, reason)| Unmapped {
                file: source.file.clone(),
                index: source.index,
                path,
                reason,
            }));
    }
    // A Deployment a Canary adopted is replaced by the Rollout: not written out.
    conversion.documents.retain(|document| match document {
        Converted::Other(value) => {
            !(value.get("kind").and_then(Value::as_str) == Some("Deployment")
                && inputs.adopted.contains(&namespace_and_name(value)))
        }
        _ => true,
    });
    conversion
}

/// The vigil documents one source becomes (none, one, or a Rollout and its template).
fn convert_one<'a>(
    source: &'a Source,
    sources: &'a [Source],
    inputs: &mut Inputs<'a>,
    notes: &mut Notes,
) -> Vec<Converted> {
    let document = &source.document;
    match origin_of(document) {
        Some(Origin::ArgoRollout) => argo::rollout(document, inputs, notes)
            .map(|r| Converted::Rollout(Box::new(r)))
            .into_iter()
            .collect(),
        Some(Origin::ArgoTemplate(cluster)) => argo::template(document, cluster, inputs, notes)
            .into_iter()
            .collect(),
        Some(Origin::FlaggerCanary) => flagger::canary(document, inputs, notes)
            .map(|(rollout, template)| {
                template
                    .map(|t| Converted::AnalysisTemplate(Box::new(t)))
                    .into_iter()
                    .chain([Converted::Rollout(Box::new(rollout))])
                    .collect()
            })
            .unwrap_or_default(),
        Some(Origin::FlaggerMetricTemplate) => {
            flagger::metric_template_alone(document, sources, notes);
            Vec::new()
        }
        Some(Origin::ArgoOther | Origin::FlaggerOther) => {
            let kind = document
                .get("kind")
                .and_then(Value::as_str)
                .unwrap_or_default();
            notes.unmapped(
                "kind",
                format!("`{kind}` is not converted: vigil converts Rollouts, analysis templates, Canaries and MetricTemplates; vigil creates its own runs"),
            );
            Vec::new()
        }
        None => vec![Converted::Other(document.clone())],
    }
}

/// Runs vigil's own validators on a converted document, so that what vigil would refuse
/// (a timeout over `MAX_QUERY_TIMEOUT`, decreasing weights) is reported here rather than
/// found by `vigil lint` on the output.
fn check_converted(document: &Converted, notes: &mut Notes) {
    let (kind, name, problems) = match document {
        Converted::Rollout(r) => (
            "Rollout",
            &r.metadata.name,
            crate::rollout::validate_spec(&r.spec),
        ),
        Converted::AnalysisTemplate(t) => (
            "AnalysisTemplate",
            &t.metadata.name,
            crate::analysis::template::validate_template(&t.spec),
        ),
        Converted::ClusterAnalysisTemplate(t) => (
            "ClusterAnalysisTemplate",
            &t.metadata.name,
            crate::analysis::template::validate_template(&t.spec.template),
        ),
        Converted::Other(_) => return,
    };
    for problem in problems {
        notes.unmapped(
            problem.path,
            format!(
                "vigil refuses the converted {kind} `{}`: {}",
                name.as_deref().unwrap_or_default(),
                problem.message
            ),
        );
    }
}

fn collect_inputs(sources: &[Source]) -> Inputs<'_> {
    let mut inputs = Inputs::default();
    for source in sources {
        let document = &source.document;
        match origin_of(document) {
            Some(Origin::ArgoRollout) => argo::collect_revision_args(document, &mut inputs),
            Some(Origin::ArgoTemplate(cluster)) => {
                inputs
                    .argo_templates
                    .push((namespace_and_name(document).1, cluster));
            }
            Some(Origin::FlaggerMetricTemplate) => {
                inputs
                    .metric_templates
                    .insert(namespace_and_name(document), document);
            }
            None if document.get("kind").and_then(Value::as_str) == Some("Deployment") => {
                inputs
                    .deployments
                    .insert(namespace_and_name(document), document);
            }
            _ => {}
        }
    }
    inputs
}

/// The documents as one multi-document YAML text.
pub fn to_yaml(documents: &[Converted]) -> Result<String, ConvertError> {
    let mut out = String::new();
    for (index, document) in documents.iter().enumerate() {
        let text = match document {
            Converted::Rollout(r) => serde_norway::to_string(r),
            Converted::AnalysisTemplate(t) => serde_norway::to_string(t),
            Converted::ClusterAnalysisTemplate(t) => serde_norway::to_string(t),
            Converted::Other(v) => serde_norway::to_string(v),
        }
        .map_err(|source| ConvertError::WriteYaml { index, source })?;
        out.push_str("---\n");
        out.push_str(&text);
    }
    Ok(out)
}

/// Kept object metadata: name, namespace, labels and annotations (what the server fills in,
/// such as `uid` or `resourceVersion`, is not the user's to carry over).
pub(crate) fn carry_metadata(
    document: &Value,
) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
    let metadata = document.get("metadata");
    let strings = |key: &str| -> Option<BTreeMap<String, String>> {
        let map = metadata?.get(key)?.as_object()?;
        let kept: BTreeMap<String, String> = map
            .iter()
            .filter(|(key, _)| !key.starts_with("kubectl.kubernetes.io/last-applied"))
            .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
            .collect();
        (!kept.is_empty()).then_some(kept)
    };
    let (namespace, name) = namespace_and_name(document);
    k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        name: (!name.is_empty()).then_some(name),
        namespace: (!namespace.is_empty()).then_some(namespace),
        labels: strings("labels"),
        annotations: strings("annotations"),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests;

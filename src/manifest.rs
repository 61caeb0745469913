//! The one reader of multi-document YAML files (`---`-separated), shared by `vigil run` /
//! `vigil demo` (the local engine), `vigil analyze` and `vigil lint`, so they split files,
//! number documents and recognise kinds the same way.

use serde::Deserialize as _;
use serde_norway::Value;

use crate::api::{AnalysisTemplate, AnalysisTemplateSpec, Rollout};
use crate::platform::local::yaml_guard::{YamlGuardError, check_nesting, yaml_lines};

/// A document that is not YAML; the parser cannot resume after it.
#[derive(Debug, thiserror::Error)]
#[error("document {index}: {source}")]
pub struct ReadDocumentError {
    /// Index of the document in the file (empty documents count).
    pub index: usize,
    /// The parser's error (it carries the line and column).
    #[source]
    pub source: serde_norway::Error,
}

/// Every document of `text`, in order, empty ones (`null`) included so that indexes match the
/// file; stops at the first document that is not YAML. A text nested deeper than
/// [`MAX_YAML_NESTING`](crate::platform::local::yaml_guard::MAX_YAML_NESTING) is refused before
/// the parser sees it (its time grows with the square of the depth).
pub fn documents(text: &str) -> Result<Vec<Value>, ReadDocumentError> {
    if let Err(error) = check_nesting(text) {
        let YamlGuardError::CheckNesting { line } = error;
        return Err(ReadDocumentError {
            index: document_at_line(text, line),
            source: <serde_norway::Error as serde::de::Error>::custom(error),
        });
    }
    serde_norway::Deserializer::from_str(text)
        .enumerate()
        .map(|(index, document)| {
            Value::deserialize(document).map_err(|source| ReadDocumentError { index, source })
        })
        .collect()
}

/// The index of the document holding the 1-based `line`, counting `---` markers before it (a
/// leading one opens document 0). Only names the document in an error message.
fn document_at_line(text: &str, line: usize) -> usize {
    let mut markers = 0usize;
    let mut content_before_first_marker = false;
    for current in yaml_lines(text).take(line.saturating_sub(1)) {
        let marker = current
            .strip_prefix("---")
            .is_some_and(|after| after.chars().next().is_none_or(char::is_whitespace));
        if marker {
            markers = markers.saturating_add(1);
        } else if markers == 0 && !current.trim().is_empty() && !current.starts_with('#') {
            content_before_first_marker = true;
        }
    }
    if content_before_first_marker {
        markers
    } else {
        markers.saturating_sub(1)
    }
}

/// The `kind` of a document, empty when it has none.
pub fn kind_of(document: &Value) -> &str {
    document
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// One typed document.
#[derive(Debug, Clone)]
pub enum Manifest {
    /// A Rollout.
    Rollout(Box<Rollout>),
    /// An AnalysisTemplate or a ClusterAnalysisTemplate (same shape): its name and spec.
    AnalysisTemplate {
        /// `metadata.name`, `None` when absent.
        name: Option<String>,
        /// The spec.
        spec: AnalysisTemplateSpec,
    },
    /// A document of another kind (the caller words the refusal).
    Other {
        /// Its `kind`.
        kind: String,
    },
}

/// A document that is not YAML, or does not decode into its kind.
#[derive(Debug, thiserror::Error)]
#[error("document {index}: {reason}")]
pub struct ParseManifestError {
    /// Index of the document in the file.
    pub index: usize,
    /// What is wrong.
    pub reason: String,
}

/// The non-empty documents of `text` with their indexes, decoded by kind.
pub fn manifests(text: &str) -> Result<Vec<(usize, Manifest)>, ParseManifestError> {
    let documents = documents(text).map_err(|error| ParseManifestError {
        index: error.index,
        reason: error.source.to_string(),
    })?;
    let mut manifests = Vec::new();
    for (index, document) in documents.into_iter().enumerate() {
        if document.is_null() {
            continue;
        }
        let decode_error = |error: serde_norway::Error| ParseManifestError {
            index,
            reason: error.to_string(),
        };
        let manifest = match kind_of(&document) {
            "Rollout" => Manifest::Rollout(Box::new(
                serde_norway::from_value(document).map_err(decode_error)?,
            )),
            "AnalysisTemplate" | "ClusterAnalysisTemplate" => {
                let template: AnalysisTemplate =
                    serde_norway::from_value(document).map_err(decode_error)?;
                Manifest::AnalysisTemplate {
                    name: template.metadata.name,
                    spec: template.spec,
                }
            }
            other => Manifest::Other {
                kind: other.to_owned(),
            },
        };
        manifests.push((index, manifest));
    }
    Ok(manifests)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEMPLATE: &str = "apiVersion: vigil.dev/v1alpha1\nkind: AnalysisTemplate\nmetadata:\n  name: errors\nspec:\n  metrics: []\n";

    #[test]
    fn empty_documents_keep_their_index() {
        let text = format!("---\n---\n{TEMPLATE}---\nkind: Service\n");
        let found = manifests(&text).expect("parses");
        let indexes: Vec<usize> = found.iter().map(|(index, _)| *index).collect();
        // The leading `---` opens the first document, which is empty.
        assert_eq!(indexes, vec![1, 2]);
        assert!(matches!(
            &found[0].1,
            Manifest::AnalysisTemplate { name: Some(name), .. } if name == "errors"
        ));
        assert!(matches!(&found[1].1, Manifest::Other { kind } if kind == "Service"));
    }

    #[test]
    fn a_document_that_is_not_yaml_is_named_by_index() {
        let text = format!("{TEMPLATE}---\nkey: [unclosed\n");
        let error = manifests(&text).expect_err("not YAML");
        assert_eq!(error.index, 1);
    }

    #[test]
    fn flow_bomb_is_refused_before_parsing_and_names_its_document_and_line() {
        let bomb = format!(
            "{TEMPLATE}---\nspec: {}{}\n",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        let error = documents(&bomb).expect_err("a bomb");
        assert_eq!(error.index, 1);
        let message = error.to_string();
        assert!(message.contains("on line 8"), "{message}");
        assert!(message.contains("64"), "{message}");
        assert_eq!(document_at_line("---\na: 1\n---\nb: [\n", 4), 1);
        assert_eq!(document_at_line("a: 1\n---\nb: [\n", 3), 1);
    }

    #[test]
    fn a_document_that_does_not_decode_names_its_index() {
        let text = format!("{TEMPLATE}---\nkind: Rollout\nspec: 3\n");
        let error = manifests(&text).expect_err("not a Rollout");
        assert_eq!(error.index, 1);
    }
}

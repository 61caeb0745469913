//! DestinationRule subsets: which revision the stable and canary subsets select, and the
//! guarded patch that points them at other revisions.

use json_patch::{AddOperation, Patch, PatchOperation, ReplaceOperation};
use serde_json::{Map, Value};

use super::{IstioError, pointer, read_field, test};

/// One subset of a DestinationRule (`spec.subsets[index]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subset {
    /// Index in `spec.subsets`.
    pub index: usize,
    /// `name`.
    pub name: String,
    /// Whether it has a `labels` map.
    pub has_labels: bool,
    /// The value of the revision label in `labels`, when present.
    pub revision: Option<String>,
}

/// The subsets of a DestinationRule, with the value of `revision_label` in each, or the
/// field that is malformed.
pub fn subsets(rule: &Value, revision_label: &str) -> Result<Vec<Subset>, IstioError> {
    let list = rule
        .pointer("/spec/subsets")
        .ok_or_else(|| {
            read_field(
                "spec.subsets",
                "missing: subset-level splitting needs the stable and canary subsets",
            )
        })?
        .as_array()
        .ok_or_else(|| read_field("spec.subsets", "not a list"))?;
    let mut found = Vec::with_capacity(list.len());
    for (index, body) in list.iter().enumerate() {
        let path = format!("spec.subsets[{index}]");
        let name = body
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| read_field(format!("{path}.name"), "missing or not a string"))?;
        let labels = match body.get("labels") {
            None | Some(Value::Null) => None,
            Some(Value::Object(map)) => Some(map),
            Some(_) => return Err(read_field(format!("{path}.labels"), "not a map")),
        };
        let revision = match labels.and_then(|l| l.get(revision_label)) {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => {
                return Err(read_field(
                    format!("{path}.labels[{revision_label:?}]"),
                    "not a string",
                ));
            }
        };
        found.push(Subset {
            index,
            name: name.to_owned(),
            has_labels: labels.is_some(),
            revision,
        });
    }
    Ok(found)
}

fn find_subset<'a>(list: &'a [Subset], name: &str) -> Result<&'a Subset, IstioError> {
    list.iter()
        .find(|s| s.name == name)
        .ok_or_else(|| IstioError::FindSubset {
            name: name.to_owned(),
        })
}

/// The revisions the (stable, canary) subsets select (their `revision_label`).
pub fn subset_revisions(
    rule: &Value,
    stable_subset: &str,
    canary_subset: &str,
    revision_label: &str,
) -> Result<(Option<String>, Option<String>), IstioError> {
    let list = subsets(rule, revision_label)?;
    Ok((
        find_subset(&list, stable_subset)?.revision.clone(),
        find_subset(&list, canary_subset)?.revision.clone(),
    ))
}

/// The JSON patch that points the stable and canary subsets at `revisions` (stable,
/// canary; `None` leaves that subset as it is) by setting `revision_label` in their
/// `labels`. Each change is guarded by a `test` of the subset's name and of the label's
/// current value; the subsets' other labels and fields are never touched. Empty when the
/// subsets already select those revisions.
pub fn subset_patch(
    rule: &Value,
    (stable_subset, canary_subset): (&str, &str),
    (stable, canary): (Option<&str>, Option<&str>),
    revision_label: &str,
) -> Result<Patch, IstioError> {
    let list = subsets(rule, revision_label)?;
    let wanted = [
        (find_subset(&list, stable_subset)?, stable),
        (find_subset(&list, canary_subset)?, canary),
    ];
    let mut ops = Vec::new();
    for (subset, revision) in wanted {
        let Some(revision) = revision else { continue };
        if subset.revision.as_deref() == Some(revision) {
            continue;
        }
        let index = subset.index.to_string();
        ops.push(test(
            pointer(["spec", "subsets", &index, "name"]),
            Value::from(subset.name.clone()),
        ));
        if !subset.has_labels {
            let mut labels = Map::new();
            labels.insert(revision_label.to_owned(), Value::from(revision));
            ops.push(PatchOperation::Add(AddOperation {
                path: pointer(["spec", "subsets", &index, "labels"]),
                value: Value::Object(labels),
            }));
            continue;
        }
        let path = pointer(["spec", "subsets", &index, "labels", revision_label]);
        match &subset.revision {
            Some(current) => {
                ops.push(test(path.clone(), Value::from(current.clone())));
                ops.push(PatchOperation::Replace(ReplaceOperation {
                    path,
                    value: Value::from(revision),
                }));
            }
            None => ops.push(PatchOperation::Add(AddOperation {
                path,
                value: Value::from(revision),
            })),
        }
    }
    Ok(Patch(ops))
}

//! Field ownership (`metadata.managedFields`) and server-side apply.
//!
//! Ownership is tracked per field manager as a set of JSON paths to leaves: objects are walked
//! into, while lists, scalars and empty objects are owned whole (every list is atomic, as in a
//! CRD without `x-kubernetes-list-type: map`). Applying a field another manager owns with a
//! different value is a conflict unless forced; updates (PUT, merge/JSON patches) always take
//! ownership of what they change, as in Kubernetes.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use super::error::ApiError;

/// A path of object keys from the root to an owned field.
pub(crate) type FieldPath = Vec<String>;

/// Metadata the server manages; nobody owns these.
const SERVER_METADATA: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
];

fn is_server_managed(path: &[String]) -> bool {
    match path {
        [top] | [top, ..] if top == "apiVersion" || top == "kind" => true,
        [meta, field, ..] if meta == "metadata" => SERVER_METADATA.contains(&field.as_str()),
        _ => false,
    }
}

/// The owned-field paths of an object: every leaf except server-managed metadata.
pub(crate) fn leaf_paths(value: &Value) -> BTreeSet<FieldPath> {
    let mut out = BTreeSet::new();
    let mut prefix = Vec::new();
    walk(value, &mut prefix, &mut |path, _| {
        if !is_server_managed(path) {
            out.insert(path.to_vec());
        }
    });
    out
}

/// The leaves of `new` whose value differs from `old` (added or modified).
pub(crate) fn changed_paths(old: &Value, new: &Value) -> BTreeSet<FieldPath> {
    let mut out = BTreeSet::new();
    let mut prefix = Vec::new();
    walk(new, &mut prefix, &mut |path, v| {
        if !is_server_managed(path) && get_path(old, path) != Some(v) {
            out.insert(path.to_vec());
        }
    });
    out
}

fn walk(value: &Value, prefix: &mut FieldPath, visit: &mut impl FnMut(&[String], &Value)) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, child) in map {
                prefix.push(key.clone());
                walk(child, prefix, visit);
                prefix.pop();
            }
        }
        _ if !prefix.is_empty() => visit(prefix, value),
        _ => {}
    }
}

/// The value at a path, if present.
pub(crate) fn get_path<'a>(value: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(value, |v, key| v.get(key))
}

fn remove_path(value: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let parent = parents
        .iter()
        .try_fold(value, |v, key| v.as_object_mut()?.get_mut(key));
    if let Some(Value::Object(map)) = parent {
        map.remove(last);
    }
}

/// Whether one path is a prefix of the other: owning `spec` overlaps owning `spec.replicas`.
fn overlaps(a: &[String], b: &[String]) -> bool {
    a.iter().zip(b).all(|(x, y)| x == y)
}

/// One `managedFields` entry.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    pub manager: String,
    /// `Apply` or `Update`.
    pub operation: String,
    /// `""` for the main resource, `"status"` for the status subresource.
    pub subresource: String,
    pub api_version: String,
    pub time: String,
    pub fields: BTreeSet<FieldPath>,
}

/// Reads `metadata.managedFields`; malformed entries are skipped.
pub(crate) fn read_entries(object: &Value) -> Vec<Entry> {
    let Some(list) = object
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|e| {
            let text = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            let mut fields = BTreeSet::new();
            decode_fields(e.get("fieldsV1")?, &mut Vec::new(), &mut fields);
            Some(Entry {
                manager: text("manager"),
                operation: text("operation"),
                subresource: text("subresource"),
                api_version: text("apiVersion"),
                time: text("time"),
                fields,
            })
        })
        .collect()
}

fn decode_fields(node: &Value, prefix: &mut FieldPath, out: &mut BTreeSet<FieldPath>) {
    let Some(map) = node.as_object() else {
        return;
    };
    if map.is_empty() && !prefix.is_empty() {
        out.insert(prefix.clone());
        return;
    }
    for (key, child) in map {
        if key == "." {
            if !prefix.is_empty() {
                out.insert(prefix.clone());
            }
        } else if let Some(field) = key.strip_prefix("f:") {
            prefix.push(field.to_string());
            decode_fields(child, prefix, out);
            prefix.pop();
        } else if !prefix.is_empty() {
            // A list-item key (`k:`, `v:`, `i:`) from a real server: own the list whole.
            out.insert(prefix.clone());
        }
    }
}

fn encode_fields(fields: &BTreeSet<FieldPath>) -> Value {
    #[derive(Default)]
    struct Node {
        owned: bool,
        children: BTreeMap<String, Node>,
    }
    fn to_value(node: &Node) -> Value {
        let mut map = Map::new();
        // A path that is also a prefix of another owned path is marked as owned itself.
        if node.owned && !node.children.is_empty() {
            map.insert(".".to_string(), json!({}));
        }
        for (key, child) in &node.children {
            map.insert(format!("f:{key}"), to_value(child));
        }
        Value::Object(map)
    }
    let mut root = Node::default();
    for path in fields {
        let node = path.iter().fold(&mut root, |node, key| {
            node.children.entry(key.clone()).or_default()
        });
        node.owned = true;
    }
    to_value(&root)
}

/// Writes the entries to `metadata.managedFields` (removed when empty).
pub(crate) fn write_entries(object: &mut Value, entries: &[Entry]) {
    let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    if entries.is_empty() {
        meta.remove("managedFields");
        return;
    }
    let list = entries
        .iter()
        .map(|e| {
            let mut v = json!({
                "manager": e.manager,
                "operation": e.operation,
                "apiVersion": e.api_version,
                "time": e.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": encode_fields(&e.fields),
            });
            if !e.subresource.is_empty() {
                v["subresource"] = json!(e.subresource);
            }
            v
        })
        .collect();
    meta.insert("managedFields".to_string(), Value::Array(list));
}

/// Who writes, and how.
#[derive(Debug, Clone)]
pub(crate) struct Writer<'a> {
    pub manager: &'a str,
    pub subresource: &'a str,
    pub api_version: &'a str,
    pub time: &'a str,
}

/// Records an update: `manager` takes the changed fields from everyone else.
pub(crate) fn record_update(
    entries: &mut Vec<Entry>,
    w: &Writer<'_>,
    changed: BTreeSet<FieldPath>,
) {
    if changed.is_empty() {
        return;
    }
    for e in entries.iter_mut() {
        e.fields
            .retain(|owned| !changed.iter().any(|c| overlaps(owned, c)));
    }
    upsert(entries, w, "Update", changed, true);
}

fn upsert(
    entries: &mut Vec<Entry>,
    w: &Writer<'_>,
    operation: &str,
    fields: BTreeSet<FieldPath>,
    extend: bool,
) {
    let found = entries.iter_mut().find(|e| {
        e.manager == w.manager && e.operation == operation && e.subresource == w.subresource
    });
    match found {
        Some(e) => {
            if extend {
                e.fields.extend(fields);
            } else {
                e.fields = fields;
            }
            e.time = w.time.to_string();
            e.api_version = w.api_version.to_string();
        }
        None => entries.push(Entry {
            manager: w.manager.to_string(),
            operation: operation.to_string(),
            subresource: w.subresource.to_string(),
            api_version: w.api_version.to_string(),
            time: w.time.to_string(),
            fields,
        }),
    }
}

/// Drops ownership of fields the object no longer has, and entries left empty.
pub(crate) fn prune(entries: &mut Vec<Entry>, object: &Value) {
    for e in entries.iter_mut() {
        e.fields.retain(|path| get_path(object, path).is_some());
    }
    entries.retain(|e| !e.fields.is_empty());
}

/// Server-side apply of `config` onto `live` (the current object, or a skeleton when creating).
/// `config` has already been cut down to what the subresource may change. Returns the merged
/// object with its `managedFields` updated, or a 409 naming the conflicting managers.
pub(crate) fn apply(
    live: &Value,
    config: &Value,
    w: &Writer<'_>,
    force: bool,
    resource: &str,
) -> Result<Value, ApiError> {
    let applied = leaf_paths(config);
    let mut entries = read_entries(live);
    let mut conflicts: Vec<(String, String)> = Vec::new();
    for e in entries.iter_mut().filter(|e| e.manager != w.manager) {
        let clashing: Vec<FieldPath> = e
            .fields
            .iter()
            .filter(|owned| {
                applied.iter().any(|p| {
                    overlaps(owned, p) && {
                        // Compare at the shorter path: that is what both sides set.
                        let at = if owned.len() < p.len() { owned } else { p };
                        get_path(live, at) != get_path(config, at)
                    }
                })
            })
            .cloned()
            .collect();
        for path in &clashing {
            conflicts.push((e.manager.clone(), format!(".{}", path.join("."))));
        }
        if force {
            e.fields.retain(|owned| !clashing.contains(owned));
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflict_error(&conflicts, resource, w.api_version));
    }

    let mut merged = live.clone();
    // Fields this manager applied before and leaves out now are removed, unless shared.
    let previously: BTreeSet<FieldPath> = entries
        .iter()
        .filter(|e| {
            e.manager == w.manager && e.operation == "Apply" && e.subresource == w.subresource
        })
        .flat_map(|e| e.fields.iter().cloned())
        .collect();
    for path in previously.difference(&applied) {
        let shared = entries
            .iter()
            .filter(|e| e.manager != w.manager)
            .any(|e| e.fields.iter().any(|o| overlaps(o, path)));
        if !shared {
            remove_path(&mut merged, path);
        }
    }
    json_patch::merge(&mut merged, config);
    upsert(&mut entries, w, "Apply", applied, false);
    write_entries(&mut merged, &entries);
    Ok(merged)
}

fn conflict_error(conflicts: &[(String, String)], resource: &str, api_version: &str) -> ApiError {
    let managers: BTreeSet<&str> = conflicts.iter().map(|(m, _)| m.as_str()).collect();
    let message = if conflicts.len() == 1 {
        let (manager, field) = &conflicts[0];
        format!(
            "Apply failed with 1 conflict: conflict with \"{manager}\" using {api_version}: {field}"
        )
    } else {
        let mut text = format!("Apply failed with {} conflicts:", conflicts.len());
        for manager in &managers {
            text.push_str(&format!(
                " conflicts with \"{manager}\" using {api_version}:"
            ));
            for (m, field) in conflicts {
                if m == manager {
                    text.push_str(&format!("\n- {field}"));
                }
            }
        }
        text
    };
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|(manager, field)| {
            json!({
                "reason": "FieldManagerConflict",
                "message": format!("conflict with \"{manager}\" using {api_version}"),
                "field": field,
            })
        })
        .collect();
    let (kind, group) = resource.split_once('.').unwrap_or((resource, ""));
    let mut error = ApiError::conflict(message);
    error.details = Some(json!({"group": group, "kind": kind, "causes": causes}));
    error
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer(manager: &str) -> Writer<'_> {
        Writer {
            manager,
            subresource: "",
            api_version: "v1",
            time: "2026-01-01T00:00:00Z",
        }
    }

    #[test]
    fn managed_fields_round_trip() {
        let obj = json!({"apiVersion": "v1", "kind": "X", "metadata": {"name": "a", "labels": {"x": "1"}},
            "spec": {"replicas": 1, "template": {}, "ports": [1, 2]}});
        let paths = leaf_paths(&obj);
        assert_eq!(paths.len(), 4);
        let mut with = obj.clone();
        let entries = vec![Entry {
            manager: "m".into(),
            operation: "Update".into(),
            subresource: String::new(),
            api_version: "v1".into(),
            time: "t".into(),
            fields: paths.clone(),
        }];
        write_entries(&mut with, &entries);
        assert_eq!(read_entries(&with), entries);
        // A prefix owned alongside its extension keeps a "." marker.
        let mut nested = BTreeSet::new();
        nested.insert(vec!["spec".to_string()]);
        nested.insert(vec!["spec".to_string(), "a".to_string()]);
        let encoded = encode_fields(&nested);
        assert_eq!(encoded, json!({"f:spec": {".": {}, "f:a": {}}}));
        let mut decoded = BTreeSet::new();
        decode_fields(&encoded, &mut Vec::new(), &mut decoded);
        assert_eq!(decoded, nested);
    }

    #[test]
    fn apply_conflicts_unless_forced_or_equal() {
        let skeleton = json!({"apiVersion": "v1", "kind": "X", "metadata": {"name": "a"}});
        let a = apply(
            &skeleton,
            &json!({"spec": {"replicas": 1, "paused": false}}),
            &writer("a"),
            false,
            "xs",
        )
        .unwrap();
        // Same value: shared ownership, no conflict.
        let shared = apply(
            &a,
            &json!({"spec": {"paused": false}}),
            &writer("b"),
            false,
            "xs",
        );
        assert!(shared.is_ok());
        let err = apply(
            &a,
            &json!({"spec": {"replicas": 2}}),
            &writer("b"),
            false,
            "xs",
        )
        .unwrap_err();
        assert_eq!(err.code, 409);
        assert!(
            err.message.contains("conflict with \"a\""),
            "{}",
            err.message
        );
        assert!(err.message.contains(".spec.replicas"), "{}", err.message);
        let forced = apply(
            &a,
            &json!({"spec": {"replicas": 2}}),
            &writer("b"),
            true,
            "xs",
        )
        .unwrap();
        assert_eq!(forced["spec"]["replicas"], 2);
        let entries = read_entries(&forced);
        let owner_a = entries.iter().find(|e| e.manager == "a").unwrap();
        assert!(
            !owner_a
                .fields
                .contains(&vec!["spec".into(), "replicas".into()])
        );
    }

    #[test]
    fn apply_removes_fields_the_manager_stopped_applying() {
        let skeleton = json!({"metadata": {"name": "a"}});
        let first = apply(
            &skeleton,
            &json!({"spec": {"a": 1, "b": 2}}),
            &writer("m"),
            false,
            "xs",
        )
        .unwrap();
        let second = apply(
            &first,
            &json!({"spec": {"a": 1}}),
            &writer("m"),
            false,
            "xs",
        )
        .unwrap();
        assert_eq!(second["spec"], json!({"a": 1}));
    }

    #[test]
    fn updates_take_ownership_of_what_they_change() {
        let mut entries = vec![Entry {
            manager: "a".into(),
            operation: "Apply".into(),
            subresource: String::new(),
            api_version: "v1".into(),
            time: "t".into(),
            fields: [vec!["spec".to_string(), "x".to_string()]].into(),
        }];
        let old = json!({"spec": {"x": 1}});
        let new = json!({"spec": {"x": 2, "y": 1}});
        record_update(&mut entries, &writer("b"), changed_paths(&old, &new));
        prune(&mut entries, &new);
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].manager, "b");
        assert_eq!(entries[0].fields.len(), 2);
    }
}

//! The checked-in CRDs in `crds/` must equal what the Rust types generate, and must avoid the
//! structural-schema traps the API server rejects.

use std::path::Path;

use serde_json::Value;

const REGENERATE: &str = "run `cargo run -- crds --out crds/` and commit the result";

#[test]
fn checked_in_crds_match_the_types() {
    let rendered = vigil::cli::crds::render().expect("render CRDs");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
    if std::env::var_os("UPDATE_CRDS").is_some() {
        for (name, yaml) in &rendered {
            std::fs::write(dir.join(name), yaml).expect("write CRD");
        }
    }
    let mut expected_files: Vec<String> = rendered.iter().map(|(n, _)| n.clone()).collect();
    expected_files.sort();
    let mut present: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}; {REGENERATE}", dir.display()))
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    present.sort();
    assert_eq!(
        present, expected_files,
        "crds/ holds other files than the four CRDs; {REGENERATE}"
    );
    for (name, yaml) in rendered {
        let on_disk = std::fs::read_to_string(dir.join(&name)).unwrap_or_default();
        assert!(on_disk == yaml, "crds/{name} is out of date; {REGENERATE}");
    }
}

fn crds_as_json() -> Vec<Value> {
    vigil::api::all_crds()
        .iter()
        .map(|crd| serde_json::to_value(crd).expect("CRD to JSON"))
        .collect()
}

/// Walks every schema (not every JSON object: a property may be named `items`), calling
/// `visit(path, schema)`.
fn walk(path: &str, value: &Value, visit: &mut dyn FnMut(&str, &serde_json::Map<String, Value>)) {
    let Value::Object(schema) = value else { return };
    visit(path, schema);
    if let Some(Value::Object(properties)) = schema.get("properties") {
        for (key, child) in properties {
            walk(&format!("{path}.{key}"), child, visit);
        }
    }
    for key in ["items", "additionalProperties"] {
        if let Some(child) = schema.get(key) {
            walk(&format!("{path}.{key}"), child, visit);
        }
    }
    for key in ["allOf", "anyOf", "oneOf"] {
        if let Some(Value::Array(children)) = schema.get(key) {
            for (i, child) in children.iter().enumerate() {
                walk(&format!("{path}.{key}[{i}]"), child, visit);
            }
        }
    }
}

#[test]
fn every_crd_has_status_subresource_printer_columns_and_one_storage_version() {
    for crd in crds_as_json() {
        let name = crd["metadata"]["name"].as_str().unwrap_or("?").to_owned();
        let versions = crd["spec"]["versions"].as_array().expect("versions");
        let storage = versions
            .iter()
            .filter(|v| v["storage"] == Value::Bool(true))
            .count();
        assert_eq!(storage, 1, "{name}: exactly one storage version");
        for version in versions {
            assert!(
                version["subresources"]["status"].is_object(),
                "{name}: status subresource missing"
            );
            let columns = version["additionalPrinterColumns"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            assert!(!columns.is_empty(), "{name}: no printer columns");
        }
    }
}

#[test]
fn rollout_printer_columns_are_the_documented_ones_and_short_name_avoids_argo() {
    let crds = crds_as_json();
    let rollout = crds
        .iter()
        .find(|c| c["spec"]["names"]["kind"] == "Rollout")
        .expect("Rollout CRD");
    let names: Vec<&str> = rollout["spec"]["versions"][0]["additionalPrinterColumns"]
        .as_array()
        .expect("columns")
        .iter()
        .filter(|c| c["priority"].is_null())
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(
        names,
        ["Desired", "Current", "Phase", "Step", "Weight", "Age"]
    );
    let short: Vec<&str> = rollout["spec"]["names"]["shortNames"]
        .as_array()
        .expect("short names")
        .iter()
        .filter_map(|s| s.as_str())
        .collect();
    assert!(!short.contains(&"ro"), "short name `ro` is Argo Rollouts'");
}

#[test]
fn schemas_are_structural() {
    for crd in crds_as_json() {
        let name = crd["metadata"]["name"].as_str().unwrap_or("?").to_owned();
        let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        let mut problems = Vec::new();
        walk("", schema, &mut |path, object| {
            if object.contains_key("properties")
                && object.get("additionalProperties") == Some(&Value::Bool(false))
            {
                problems.push(format!(
                    "{path}: properties beside additionalProperties: false"
                ));
            }
            for forbidden in ["$ref", "definitions", "$defs"] {
                if object.contains_key(forbidden) {
                    problems.push(format!(
                        "{path}: {forbidden} is not allowed in a CRD schema"
                    ));
                }
            }
            if object.get("type").is_none()
                && object.get("x-kubernetes-preserve-unknown-fields").is_none()
                && object.get("x-kubernetes-int-or-string").is_none()
                && (object.contains_key("properties") || object.contains_key("items"))
            {
                problems.push(format!("{path}: schema without a type"));
            }
        });
        assert!(problems.is_empty(), "{name}: {problems:#?}");
    }
}

#[test]
fn rollout_crd_fits_the_client_side_apply_annotation_limit() {
    // kubectl's last-applied annotation is limited to 262144 bytes; Argo's CRD overflows it.
    for (name, yaml) in vigil::cli::crds::render().expect("render") {
        let json = serde_json::to_string(&serde_norway::from_str::<Value>(&yaml).expect("parse"))
            .expect("json");
        assert!(
            json.len() < 262_144,
            "{name} is {} bytes as JSON",
            json.len()
        );
    }
}

//! The revision name of a pod template, and names that fit Kubernetes' length limits.

use k8s_openapi::api::core::v1::PodTemplateSpec;
use serde_json::Value;

/// A stable hash of a pod template: 16 lowercase hex digits of FNV-1a 64 over the template's
/// canonical JSON (object keys sorted, `null`s and empty objects/arrays dropped since
/// Kubernetes treats them as absent).
///
/// It depends only on the template's content: the same across runs, platforms and field
/// orders, so a restarted controller names the same revision. It names ReplicaSets
/// (`<rollout>-<hash>`) and is what `status.stableRevision` / `canaryRevision` hold.
pub fn template_hash(template: &PodTemplateSpec) -> String {
    // Serializing a k8s-openapi struct cannot fail; Null is a safe fallback that still hashes.
    let value = serde_json::to_value(template).unwrap_or(Value::Null);
    let mut canonical = String::new();
    write_canonical(&value, &mut canonical);
    format!("{:016x}", fnv1a64(canonical.as_bytes()))
}

/// Longest object name Kubernetes accepts (a DNS subdomain).
pub const MAX_NAME_LEN: usize = 253;
/// Longest label value Kubernetes accepts.
pub const MAX_LABEL_VALUE_LEN: usize = 63;

/// `name` if it has at most `max` bytes; otherwise a prefix of it, trimmed so it still ends
/// with a letter or digit, then `-` and 16 hex digits of FNV-1a 64 over the whole name. The
/// result is deterministic (a restarted controller derives the same name) and distinct for
/// names sharing a long prefix. `max` below 18 leaves only the hash.
pub fn fit_name(name: &str, max: usize) -> String {
    if name.len() <= max {
        return name.to_owned();
    }
    let hash = format!("{:016x}", fnv1a64(name.as_bytes()));
    let room = max.saturating_sub(hash.len() + 1);
    let cut = name
        .char_indices()
        .map(|(at, c)| at + c.len_utf8())
        .take_while(|end| *end <= room)
        .last()
        .unwrap_or(0);
    let prefix = name[..cut].trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
    if prefix.is_empty() {
        hash
    } else {
        format!("{prefix}-{hash}")
    }
}

pub(crate) fn fnv1a64(bytes: &[u8]) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(OFFSET_BASIS, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(PRIME)
    })
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Object(map) => map.values().all(is_empty),
        Value::Array(items) => items.is_empty(),
        _ => false,
    }
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map
                .iter()
                .filter(|(_, v)| !is_empty(v))
                .map(|(k, _)| k)
                .collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                if let Some(child) = map.get(key) {
                    write_canonical(child, out);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, PodSpec};

    fn template(image: &str) -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: None,
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "app".into(),
                    image: Some(image.into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        }
    }

    #[test]
    fn fnv1a64_matches_the_reference_vectors() {
        // From the FNV reference test suite.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn hash_is_pinned_so_it_stays_stable_across_releases() {
        let hash = template_hash(&template("app:1"));
        assert_eq!(hash.len(), 16);
        assert!(
            hash.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        // Changing this value renames every ReplicaSet in every cluster: do not.
        let mut canonical = String::new();
        write_canonical(
            &serde_json::to_value(template("app:1")).expect("json"),
            &mut canonical,
        );
        assert_eq!(
            canonical,
            r#"{"spec":{"containers":[{"image":"app:1","name":"app"}]}}"#
        );
        assert_eq!(hash, "6910e5e364d8d2ff");
    }

    #[test]
    fn different_templates_differ_and_absent_equals_empty() {
        assert_ne!(
            template_hash(&template("app:1")),
            template_hash(&template("app:2"))
        );
        let mut with_empty_metadata = template("app:1");
        with_empty_metadata.metadata = Some(Default::default());
        assert_eq!(
            template_hash(&with_empty_metadata),
            template_hash(&template("app:1"))
        );
    }

    #[test]
    fn key_order_does_not_matter() {
        let a: Value = serde_json::json!({"b": 1, "a": {"y": [1, 2], "x": "s"}});
        let b: Value = serde_json::json!({"a": {"x": "s", "y": [1, 2]}, "b": 1});
        let (mut ca, mut cb) = (String::new(), String::new());
        write_canonical(&a, &mut ca);
        write_canonical(&b, &mut cb);
        assert_eq!(ca, cb);
        assert_eq!(ca, r#"{"a":{"x":"s","y":[1,2]},"b":1}"#);
    }

    #[test]
    fn short_names_are_kept() {
        assert_eq!(fit_name("web-abc-1-step2", MAX_NAME_LEN), "web-abc-1-step2");
    }

    #[test]
    fn long_names_fit_end_alphanumeric_and_stay_distinct() {
        let long = "a".repeat(240);
        let one = fit_name(&format!("{long}-0123456789abcdef-1-step2"), MAX_NAME_LEN);
        let two = fit_name(&format!("{long}-0123456789abcdef-1-step3"), MAX_NAME_LEN);
        assert_eq!(one.len(), MAX_NAME_LEN);
        assert_ne!(one, two);
        assert!(one.starts_with(&"a".repeat(200)));
        let label = fit_name(&format!("{}-.-tail", "b".repeat(44)), MAX_LABEL_VALUE_LEN);
        assert!(label.len() <= MAX_LABEL_VALUE_LEN, "{label}");
        assert!(
            label.starts_with(&format!("{}-", "b".repeat(44))),
            "{label}"
        );
        // Deterministic: a restarted controller finds the same object.
        assert_eq!(
            fit_name(&"c".repeat(300), 63),
            fit_name(&"c".repeat(300), 63)
        );
    }

    #[test]
    fn multibyte_names_are_cut_on_a_character_boundary() {
        let name = "é".repeat(200);
        let fitted = fit_name(&name, 63);
        assert!(fitted.len() <= 63);
        // Nothing alphanumeric in ASCII to keep: only the hash remains.
        assert_eq!(fitted.len(), 16);
    }
}

//! A map of a source document read field by field: every field is either taken (and mapped)
//! or reported at the end as unmapped, so nothing is dropped in silence.

use serde_json::{Map, Value};

use super::Notes;

/// The fields of one object, with the path of the object.
pub(crate) struct Fields<'a> {
    path: String,
    map: Vec<(&'a str, &'a Value)>,
}

impl<'a> Fields<'a> {
    /// The fields of `value` at `path`; an object that is not a map is reported and reads as
    /// empty.
    pub(crate) fn of(value: &'a Value, path: &str, notes: &mut Notes) -> Self {
        let map = match value {
            Value::Object(map) => entries(map),
            Value::Null => Vec::new(),
            other => {
                notes.unmapped(path, format!("expected a map, found {}", describe(other)));
                Vec::new()
            }
        };
        Fields {
            path: path.to_owned(),
            map,
        }
    }

    /// The path of a child field.
    pub(crate) fn path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// Takes the field `key`, if present (a `null` counts as absent).
    pub(crate) fn take(&mut self, key: &str) -> Option<&'a Value> {
        let at = self.map.iter().position(|(k, _)| *k == key)?;
        let (_, value) = self.map.remove(at);
        (!value.is_null()).then_some(value)
    }

    /// Takes a string field; another type is reported.
    pub(crate) fn string(&mut self, key: &str, notes: &mut Notes) -> Option<String> {
        match self.take(key)? {
            Value::String(s) => Some(s.clone()),
            other => {
                notes.unmapped(
                    self.path(key),
                    format!("expected a string, found {}", describe(other)),
                );
                None
            }
        }
    }

    /// Takes an integer field that fits in 32 bits; another type is reported.
    pub(crate) fn int(&mut self, key: &str, notes: &mut Notes) -> Option<i32> {
        let value = self.take(key)?;
        match value.as_i64().and_then(|n| i32::try_from(n).ok()) {
            Some(n) => Some(n),
            None => {
                notes.unmapped(
                    self.path(key),
                    format!("expected a 32-bit integer, found {}", describe(value)),
                );
                None
            }
        }
    }

    /// Takes a boolean field; another type is reported.
    pub(crate) fn bool(&mut self, key: &str, notes: &mut Notes) -> Option<bool> {
        match self.take(key)? {
            Value::Bool(b) => Some(*b),
            other => {
                notes.unmapped(
                    self.path(key),
                    format!("expected true or false, found {}", describe(other)),
                );
                None
            }
        }
    }

    /// Takes a list field; another type is reported and reads as empty.
    pub(crate) fn list(&mut self, key: &str, notes: &mut Notes) -> &'a [Value] {
        match self.take(key) {
            Some(Value::Array(items)) => items,
            Some(other) => {
                notes.unmapped(
                    self.path(key),
                    format!("expected a list, found {}", describe(other)),
                );
                &[]
            }
            None => &[],
        }
    }

    /// Reports every field not taken, with the reason `why` gives for its name (or a generic
    /// one).
    pub(crate) fn finish(self, notes: &mut Notes, why: impl Fn(&str) -> Option<String>) {
        for (key, value) in &self.map {
            if value.is_null() {
                continue;
            }
            let reason = why(key)
                .unwrap_or_else(|| format!("`{key}` has no vigil equivalent; it was left out"));
            notes.unmapped(self.path(key), reason);
        }
    }

    /// Drops a field that is deliberately not carried over (defaults that vigil shares).
    pub(crate) fn ignore(&mut self, key: &str) {
        let _ = self.take(key);
    }
}

fn entries(map: &Map<String, Value>) -> Vec<(&str, &Value)> {
    map.iter().map(|(k, v)| (k.as_str(), v)).collect()
}

/// A value described in words for a message.
pub(crate) fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string {s:?}"),
        Value::Array(_) => "a list".to_owned(),
        Value::Object(_) => "a map".to_owned(),
    }
}

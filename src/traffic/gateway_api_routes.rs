//! Managed header and mirror routes on a Gateway API `HTTPRoute` (pure).
//!
//! Each managed route is one rule of the HTTPRoute that vigil adds ahead of the others and
//! names `vigil-header-<name>` / `vigil-mirror-<name>` (rule names, GEP-995). Its matches are
//! those of the rules that split traffic between the stable and canary Services, each with
//! the route's conditions added, so it is more specific than they are and wins:
//!
//! - a **header route** sends what it matches to the canary's backendRef only;
//! - a **mirror route** keeps the split of the original rule (the same backendRefs, whose
//!   weights vigil sets with the others) and adds a `RequestMirror` filter with `percent`
//!   towards the canary.
//!
//! What vigil put in place is recorded in the `vigil.dev/managed-routes` annotation, changed in
//! the same guarded JSON patch as the rules. Reading back reports a route in place only when its
//! rule is exactly what vigil would build from the route now, so a rule edited or removed by
//! someone else is put back; any other managed rule present (recorded, or named with a managed
//! prefix) is reported stale, so it is removed when not wanted.
//!
//! A managed rule keeps the split rule's `filters` and `timeouts` (a header must not bypass an
//! auth or rewrite filter); split rules that differ in them or in their backendRefs are refused.

use json_patch::jsonptr::PointerBuf;
use json_patch::{
    AddOperation, Patch, PatchOperation, RemoveOperation, ReplaceOperation, TestOperation,
};
use serde_json::{Map, Value, json};

use super::gateway_api::RouteError;
use super::{HeaderMatch, HeaderRoute, ManagedRoutes, MirrorRoute, StringMatch};

/// The annotation recording the managed routes vigil put on an HTTPRoute.
pub const ROUTES_ANNOTATION: &str = "vigil.dev/managed-routes";
/// Most matches one HTTPRoute rule may hold (the Gateway API's own bound).
pub const MAX_RULE_MATCHES: usize = 64;
/// Most header conditions one HTTPRoute match may hold (the Gateway API's own bound).
pub const MAX_MATCH_HEADERS: usize = 16;

const HEADER_RULE: &str = "vigil-header-";
const MIRROR_RULE: &str = "vigil-mirror-";

/// One change of the managed routes.
#[derive(Debug, Clone, Copy)]
pub enum RouteChange<'a> {
    /// Put this header route in place.
    SetHeader(&'a HeaderRoute),
    /// Remove the header route of this name.
    RemoveHeader(&'a str),
    /// Put this mirror route in place.
    SetMirror(&'a MirrorRoute),
    /// Remove the mirror route of this name.
    RemoveMirror(&'a str),
}

/// Whether `rule` is a managed header rule (it routes to the canary only, so it takes no part
/// in the weights).
pub fn is_header_rule(rule: &Value) -> bool {
    rule_name(rule).is_some_and(|n| n.starts_with(HEADER_RULE))
}

fn is_managed_rule(rule: &Value) -> bool {
    rule_name(rule).is_some_and(|n| n.starts_with(HEADER_RULE) || n.starts_with(MIRROR_RULE))
}

fn rule_name(rule: &Value) -> Option<&str> {
    rule.get("name").and_then(Value::as_str)
}

fn rules(route: &Value) -> &[Value] {
    route
        .pointer("/spec/rules")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// A backendRef to a core Service named `service`.
fn refers_to(backend: &Value, service: &str) -> bool {
    let group = backend.get("group").and_then(Value::as_str).unwrap_or("");
    let kind = backend
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("Service");
    group.is_empty()
        && kind == "Service"
        && backend.get("name").and_then(Value::as_str) == Some(service)
}

/// The user's rules that split traffic between the two Services.
fn split_rules<'r>(
    route: &'r Value,
    stable: &str,
    canary: &str,
) -> Result<Vec<&'r Value>, RouteError> {
    let found: Vec<&Value> = rules(route)
        .iter()
        .filter(|rule| !is_managed_rule(rule))
        .filter(|rule| {
            let refs = rule
                .get("backendRefs")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default();
            refs.iter().any(|b| refers_to(b, stable)) && refs.iter().any(|b| refers_to(b, canary))
        })
        .collect();
    if found.is_empty() {
        return Err(RouteError::FindBackendRefs {
            stable: stable.to_owned(),
            canary: canary.to_owned(),
        });
    }
    Ok(found)
}

/// The split rules' shared `filters`, `timeouts` and `backendRefs`: a managed rule serves as
/// they do, so they must agree (copying one rule's filters would bypass another's).
fn shared_serving(split: &[&Value]) -> Result<Map<String, Value>, RouteError> {
    let serving = |rule: &Value| -> Map<String, Value> {
        ["filters", "timeouts", "backendRefs"]
            .into_iter()
            .filter_map(|field| Some((field.to_owned(), rule.get(field)?.clone())))
            .collect()
    };
    let first = split.first().map(|rule| serving(rule)).unwrap_or_default();
    if split.iter().any(|rule| serving(rule) != first) {
        return Err(RouteError::ShareSplitRules);
    }
    Ok(first)
}

/// The matches of the split rules (a rule without matches matches every request).
fn split_matches(split: &[&Value]) -> Vec<Map<String, Value>> {
    split
        .iter()
        .flat_map(|rule| {
            let matches: Vec<Map<String, Value>> = rule
                .get("matches")
                .and_then(Value::as_array)
                .map(|ms| ms.iter().filter_map(|m| m.as_object().cloned()).collect())
                .unwrap_or_default();
            if matches.is_empty() {
                vec![Map::new()]
            } else {
                matches
            }
        })
        .collect()
}

/// A Gateway API header match for `value`. A prefix becomes a regular expression (the
/// Gateway API has no prefix header match).
fn header_match(name: &str, value: &StringMatch) -> Value {
    let (kind, value) = match value {
        StringMatch::Exact(v) => ("Exact", v.clone()),
        StringMatch::Prefix(p) => ("RegularExpression", format!("{}.*", regex::escape(p))),
        StringMatch::Regex(r) => ("RegularExpression", r.clone()),
    };
    json!({"type": kind, "name": name, "value": value})
}

fn path_match(value: &StringMatch) -> Value {
    let (kind, value) = match value {
        StringMatch::Exact(v) => ("Exact", v),
        StringMatch::Prefix(p) => ("PathPrefix", p),
        StringMatch::Regex(r) => ("RegularExpression", r),
    };
    json!({"type": kind, "value": value})
}

/// `base` with `headers` added to its header conditions, within [`MAX_MATCH_HEADERS`].
fn with_headers(mut base: Map<String, Value>, headers: Vec<Value>) -> Result<Value, RouteError> {
    let mut all: Vec<Value> = base
        .get("headers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    all.extend(headers);
    if all.len() > MAX_MATCH_HEADERS {
        return Err(RouteError::CountMatchHeaders {
            count: all.len(),
            limit: MAX_MATCH_HEADERS,
        });
    }
    if !all.is_empty() {
        base.insert("headers".into(), Value::Array(all));
    }
    Ok(Value::Object(base))
}

fn bounded_matches(rule: &str, matches: Vec<Value>) -> Result<Value, RouteError> {
    if matches.len() > MAX_RULE_MATCHES {
        return Err(RouteError::CountRuleMatches {
            rule: rule.to_owned(),
            count: matches.len(),
            limit: MAX_RULE_MATCHES,
        });
    }
    Ok(Value::Array(matches))
}

/// The rule of the header route `header`: the split rules' matches with its headers added,
/// to the canary's backendRef only.
pub fn header_rule(
    route: &Value,
    stable: &str,
    canary: &str,
    header: &HeaderRoute,
) -> Result<Value, RouteError> {
    let split = split_rules(route, stable, canary)?;
    let conditions: Vec<Value> = header
        .matches
        .iter()
        .map(|HeaderMatch { header_name, value }| header_match(header_name, value))
        .collect();
    let matches = split_matches(&split)
        .into_iter()
        .map(|base| with_headers(base, conditions.clone()))
        .collect::<Result<Vec<_>, _>>()?;
    let name = format!("{HEADER_RULE}{}", header.name);
    let mut serving = shared_serving(&split)?;
    // The API server defaults a backendRef's weight to 1: written so, it reads back equal.
    let mut canary_ref = first_ref(&split, canary);
    if let Some(fields) = canary_ref.as_object_mut() {
        fields.insert("weight".into(), json!(1));
    }
    let mut rule = Map::new();
    rule.insert("name".into(), json!(name));
    rule.insert("matches".into(), bounded_matches(&name, matches)?);
    serving.insert("backendRefs".into(), json!([canary_ref]));
    rule.extend(serving);
    Ok(Value::Object(rule))
}

/// The canary's backendRef of the first split rule, without its weight (a mirror's
/// backendRef has none).
fn first_ref(split: &[&Value], service: &str) -> Value {
    let mut backend = split
        .iter()
        .flat_map(|rule| {
            rule.get("backendRefs")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        })
        .find(|b| refers_to(b, service))
        .cloned()
        .unwrap_or_else(|| json!({"name": service}));
    if let Some(fields) = backend.as_object_mut() {
        fields.remove("weight");
    }
    backend
}

/// The rule of the mirror route `mirror`: every combination of a split rule's match and a
/// mirror match (the mirror's method and path, when set, replace the split rule's), serving
/// as the first split rule does, with a `RequestMirror` filter towards the canary.
pub fn mirror_rule(
    route: &Value,
    stable: &str,
    canary: &str,
    mirror: &MirrorRoute,
) -> Result<Value, RouteError> {
    let split = split_rules(route, stable, canary)?;
    let mut matches = Vec::new();
    for base in split_matches(&split) {
        for wanted in &mirror.matches {
            let mut combined = base.clone();
            if let Some(method) = &wanted.method {
                let StringMatch::Exact(method) = method else {
                    return Err(RouteError::MatchMethod {
                        route: mirror.name.clone(),
                    });
                };
                combined.insert("method".into(), json!(method));
            }
            if let Some(path) = &wanted.path {
                combined.insert("path".into(), path_match(path));
            }
            let headers = wanted
                .headers
                .iter()
                .map(|(name, value)| header_match(name, value))
                .collect();
            matches.push(with_headers(combined, headers)?);
        }
    }
    let name = format!("{MIRROR_RULE}{}", mirror.name);
    let mut serving = shared_serving(&split)?;
    let mut filters: Vec<Value> = serving
        .get("filters")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    filters.push(json!({
        "type": "RequestMirror",
        "requestMirror": {
            "backendRef": first_ref(&split, canary),
            "percent": mirror.percentage.clamp(0, 100),
        }
    }));
    serving.insert("filters".into(), Value::Array(filters));
    serving.entry("backendRefs").or_insert_with(|| json!([]));
    let mut rule = Map::new();
    rule.insert("name".into(), json!(name));
    rule.insert("matches".into(), bounded_matches(&name, matches)?);
    rule.extend(serving);
    Ok(Value::Object(rule))
}

/// The managed routes recorded on `route` (none when the annotation is absent or unreadable).
fn recorded(route: &Value) -> ManagedRoutes {
    route
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(ROUTES_ANNOTATION))
        .and_then(Value::as_str)
        .and_then(|text| serde_json::from_str::<ManagedRoutes>(text).ok())
        .map(|r| ManagedRoutes::new(r.header, r.mirror))
        .unwrap_or_default()
}

fn find_rule<'r>(route: &'r Value, name: &str) -> Option<(usize, &'r Value)> {
    rules(route)
        .iter()
        .enumerate()
        .find(|(_, rule)| rule_name(rule) == Some(name))
}

/// The managed routes on `route`: in place when recorded with their rule exactly as vigil
/// would build it now; stale when their rule is present otherwise (edited, defaulted, or
/// unrecorded but named with a managed prefix), so it is removed when not wanted.
pub fn managed_routes(route: &Value, stable: &str, canary: &str) -> ManagedRoutes {
    let recorded = recorded(route);
    let as_built = |name: &str, built: Result<Value, RouteError>| {
        built.is_ok_and(|rule| find_rule(route, name).is_some_and(|(_, r)| *r == rule))
    };
    let (header, header_off): (Vec<HeaderRoute>, Vec<HeaderRoute>) =
        recorded.header.into_iter().partition(|h| {
            as_built(
                &format!("{HEADER_RULE}{}", h.name),
                header_rule(route, stable, canary, h),
            )
        });
    let (mirror, mirror_off): (Vec<MirrorRoute>, Vec<MirrorRoute>) =
        recorded.mirror.into_iter().partition(|m| {
            as_built(
                &format!("{MIRROR_RULE}{}", m.name),
                mirror_rule(route, stable, canary, m),
            )
        });
    let stale = |prefix: &str, in_place: &[&str], off: Vec<String>| -> Vec<String> {
        let mut names: Vec<String> = rules(route)
            .iter()
            .filter_map(|rule| rule_name(rule)?.strip_prefix(prefix))
            .filter(|name| !in_place.contains(name))
            .map(str::to_owned)
            .chain(off)
            .collect();
        names.sort();
        names.dedup();
        names
    };
    let header_names: Vec<&str> = header.iter().map(|h| h.name.as_str()).collect();
    let mirror_names: Vec<&str> = mirror.iter().map(|m| m.name.as_str()).collect();
    let header_off = header_off.into_iter().map(|h| h.name).collect();
    let mirror_off = mirror_off.into_iter().map(|m| m.name).collect();
    let stale_header = stale(HEADER_RULE, &header_names, header_off);
    let stale_mirror = stale(MIRROR_RULE, &mirror_names, mirror_off);
    let mut routes = ManagedRoutes::new(header, mirror);
    routes.stale_header = stale_header;
    routes.stale_mirror = stale_mirror;
    routes
}

fn pointer(tokens: &[&str]) -> PointerBuf {
    PointerBuf::from_tokens(tokens.iter().copied())
}

/// The JSON patch making `change` on `route`: a `test` of the rules as read (nobody changed
/// them since), the managed rule of that name removed, the new one added first, and the
/// annotation updated (guarded by a `test` of its value as read).
pub fn route_patch(
    route: &Value,
    stable: &str,
    canary: &str,
    change: RouteChange,
) -> Result<Patch, RouteError> {
    let mut routes = recorded(route);
    let (rule_name, new_rule) = match change {
        RouteChange::SetHeader(header) => {
            routes.header.retain(|r| r.name != header.name);
            routes.header.push(header.clone());
            let name = format!("{HEADER_RULE}{}", header.name);
            (name, Some(header_rule(route, stable, canary, header)?))
        }
        RouteChange::RemoveHeader(name) => {
            routes.header.retain(|r| r.name != name);
            (format!("{HEADER_RULE}{name}"), None)
        }
        RouteChange::SetMirror(mirror) => {
            routes.mirror.retain(|r| r.name != mirror.name);
            routes.mirror.push(mirror.clone());
            let name = format!("{MIRROR_RULE}{}", mirror.name);
            (name, Some(mirror_rule(route, stable, canary, mirror)?))
        }
        RouteChange::RemoveMirror(name) => {
            routes.mirror.retain(|r| r.name != name);
            (format!("{MIRROR_RULE}{name}"), None)
        }
    };
    let routes = ManagedRoutes::new(routes.header, routes.mirror);
    let mut ops = vec![PatchOperation::Test(TestOperation {
        path: pointer(&["spec", "rules"]),
        value: Value::Array(rules(route).to_vec()),
    })];
    if let Some((index, _)) = find_rule(route, &rule_name) {
        ops.push(PatchOperation::Remove(RemoveOperation {
            path: pointer(&["spec", "rules", &index.to_string()]),
        }));
    }
    if let Some(rule) = new_rule {
        ops.push(PatchOperation::Add(AddOperation {
            path: pointer(&["spec", "rules", "0"]),
            value: rule,
        }));
    }
    ops.extend(annotation_ops(route, &routes));
    Ok(Patch(ops))
}

/// The ops that record `routes` in the annotation (removed when there are none).
fn annotation_ops(route: &Value, routes: &ManagedRoutes) -> Vec<PatchOperation> {
    let annotations = route
        .pointer("/metadata/annotations")
        .and_then(Value::as_object);
    let current = annotations.and_then(|a| a.get(ROUTES_ANNOTATION)).cloned();
    let path = pointer(&["metadata", "annotations", ROUTES_ANNOTATION]);
    let text = serde_json::to_string(routes).unwrap_or_default();
    let mut ops = Vec::new();
    if let Some(current) = &current {
        ops.push(PatchOperation::Test(TestOperation {
            path: path.clone(),
            value: current.clone(),
        }));
    }
    match (annotations, current, routes.is_empty()) {
        (_, None, true) => {}
        (_, Some(_), true) => ops.push(PatchOperation::Remove(RemoveOperation { path })),
        (_, Some(_), false) => ops.push(PatchOperation::Replace(ReplaceOperation {
            path,
            value: Value::String(text),
        })),
        (Some(_), None, false) => ops.push(PatchOperation::Add(AddOperation {
            path,
            value: Value::String(text),
        })),
        (None, None, false) => ops.push(PatchOperation::Add(AddOperation {
            path: pointer(&["metadata", "annotations"]),
            value: json!({ ROUTES_ANNOTATION: text }),
        })),
    }
    ops
}

#[cfg(test)]
#[path = "gateway_api_routes_tests.rs"]
mod tests;

//! vigil's own HTTP routes in a VirtualService: header routes (`setHeaderRoute`: requests
//! with matching headers go to the canary only) and mirror routes (`setMirrorRoute`: the
//! split as usual, plus a copy of a share of the matching requests to the canary). They are
//! named after the Rollout's `managedRoutes`, sit ahead of the user's routes in that order,
//! and are the only routes vigil adds or removes; each change is guarded by a `test` of the
//! whole route it replaces or lands next to.

use std::collections::BTreeMap;

use json_patch::{AddOperation, Patch, PatchOperation, RemoveOperation, ReplaceOperation};
use serde_json::{Map, Value, json};

use super::{IstioError, Side, Split, http_routes, managed_routes, pointer, test};
use crate::traffic::{
    HeaderMatch, HeaderRoute, ManagedRoutes, MirrorMatch, MirrorRoute, StringMatch,
};

fn string_match(value: &StringMatch) -> Value {
    match value {
        StringMatch::Exact(v) => json!({"exact": v}),
        StringMatch::Prefix(v) => json!({"prefix": v}),
        StringMatch::Regex(v) => json!({"regex": v}),
    }
}

fn read_string_match(value: &Value) -> Option<StringMatch> {
    let map = value.as_object()?;
    if map.len() != 1 {
        return None;
    }
    let (kind, v) = map.iter().next()?;
    let v = v.as_str()?.to_owned();
    match kind.as_str() {
        "exact" => Some(StringMatch::Exact(v)),
        "prefix" => Some(StringMatch::Prefix(v)),
        "regex" => Some(StringMatch::Regex(v)),
        _ => None,
    }
}

/// Istio wants header names in lower case.
fn headers(matches: impl IntoIterator<Item = (String, Value)>) -> Value {
    Value::Object(
        matches
            .into_iter()
            .map(|(name, value)| (name.to_ascii_lowercase(), value))
            .collect::<Map<String, Value>>(),
    )
}

/// The stable/canary destinations (`route`) of the first route vigil weighs, and the canary's
/// `destination` object: what vigil's own routes copy.
fn split_of(
    virtual_service: &Value,
    named: &[String],
    split: &Split,
    vigil_routes: &[String],
) -> Result<(Value, Value), IstioError> {
    let routes = http_routes(virtual_service)?;
    let managed = managed_routes(&routes, named, split, vigil_routes)?;
    let first = managed
        .first()
        .ok_or_else(|| IstioError::FindDestinations {
            stable: split.describe(Side::Stable),
            canary: split.describe(Side::Canary),
        })?;
    let route = virtual_service
        .pointer(&format!("/spec/http/{}/route", first.route.index))
        .cloned()
        .unwrap_or(Value::Null);
    let canary = route
        .pointer(&format!("/{}/destination", first.canary.index))
        .cloned()
        .unwrap_or(Value::Null);
    Ok((route, canary))
}

/// The Istio route for `route`: its headers (all must match) to the canary only.
pub fn header_route_body(route: &HeaderRoute, canary_destination: &Value) -> Value {
    let matched = headers(
        route
            .matches
            .iter()
            .map(|m| (m.header_name.clone(), string_match(&m.value))),
    );
    json!({
        "name": route.name,
        "match": [{"headers": matched}],
        "route": [{"destination": canary_destination, "weight": 100}],
    })
}

/// The Istio route for `route`: the split of `destinations` as it is, plus a copy of
/// `percentage` percent of the matching requests to the canary.
pub fn mirror_route_body(
    route: &MirrorRoute,
    destinations: &Value,
    canary_destination: &Value,
) -> Value {
    let mut body = json!({
        "name": route.name,
        "route": destinations,
        "mirror": canary_destination,
        "mirrorPercentage": {"value": f64::from(route.percentage.clamp(0, 100))},
    });
    if !route.matches.is_empty() {
        let matches: Vec<Value> = route
            .matches
            .iter()
            .map(|m| {
                let mut block = Map::new();
                if let Some(method) = &m.method {
                    block.insert("method".into(), string_match(method));
                }
                if let Some(path) = &m.path {
                    block.insert("uri".into(), string_match(path));
                }
                if !m.headers.is_empty() {
                    block.insert(
                        "headers".into(),
                        headers(m.headers.iter().map(|(k, v)| (k.clone(), string_match(v)))),
                    );
                }
                Value::Object(block)
            })
            .collect();
        body["match"] = Value::Array(matches);
    }
    body
}

/// Where a managed route named `name` goes: after vigil's routes that come before it in
/// `vigil_routes`, ahead of everything else.
fn insert_index(http: &[Value], name: &str, vigil_routes: &[String]) -> usize {
    let order = |n: &str| vigil_routes.iter().position(|v| v == n);
    let mine = order(name).unwrap_or(usize::MAX);
    http.iter()
        .take_while(|r| {
            r.get("name")
                .and_then(Value::as_str)
                .and_then(order)
                .is_some_and(|o| o < mine)
        })
        .count()
}

/// The ops that put `body` in place as the route named in it: replaced where a route of that
/// name is (guarded by a test of the whole route read), inserted at its place otherwise
/// (guarded by a test of the route it lands before). Empty when it is already there.
fn put_route(virtual_service: &Value, body: Value, vigil_routes: &[String]) -> Vec<PatchOperation> {
    let name = body
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let http = virtual_service
        .pointer("/spec/http")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if let Some(index) = http
        .iter()
        .position(|r| r.get("name").and_then(Value::as_str) == Some(name.as_str()))
    {
        if http[index] == body {
            return Vec::new();
        }
        let path = pointer(["spec", "http", &index.to_string()]);
        return vec![
            test(path.clone(), http[index].clone()),
            PatchOperation::Replace(ReplaceOperation { path, value: body }),
        ];
    }
    let index = insert_index(http, &name, vigil_routes);
    let path = pointer(["spec", "http", &index.to_string()]);
    let mut ops = Vec::new();
    if let Some(next) = http.get(index) {
        ops.push(test(path.clone(), next.clone()));
    }
    ops.push(PatchOperation::Add(AddOperation { path, value: body }));
    ops
}

/// The patch that puts the header route `route` in place in a VirtualService, sending the
/// matching requests to the canary destination of its weighed routes.
pub fn header_route_patch(
    virtual_service: &Value,
    named: &[String],
    split: &Split,
    vigil_routes: &[String],
    route: &HeaderRoute,
) -> Result<Patch, IstioError> {
    let (_, canary) = split_of(virtual_service, named, split, vigil_routes)?;
    let body = header_route_body(route, &canary);
    Ok(Patch(put_route(virtual_service, body, vigil_routes)))
}

/// The patch that puts the mirror route `route` in place in a VirtualService: the split of
/// its weighed routes, mirrored to their canary destination.
pub fn mirror_route_patch(
    virtual_service: &Value,
    named: &[String],
    split: &Split,
    vigil_routes: &[String],
    route: &MirrorRoute,
) -> Result<Patch, IstioError> {
    let (destinations, canary) = split_of(virtual_service, named, split, vigil_routes)?;
    let body = mirror_route_body(route, &destinations, &canary);
    Ok(Patch(put_route(virtual_service, body, vigil_routes)))
}

/// The patch that removes vigil's route `name` (guarded by a test of the whole route read);
/// empty when there is none.
pub fn remove_route_patch(virtual_service: &Value, name: &str) -> Patch {
    let http = virtual_service
        .pointer("/spec/http")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let Some(index) = http
        .iter()
        .position(|r| r.get("name").and_then(Value::as_str) == Some(name))
    else {
        return Patch(Vec::new());
    };
    let path = pointer(["spec", "http", &index.to_string()]);
    Patch(vec![
        test(path.clone(), http[index].clone()),
        PatchOperation::Remove(RemoveOperation { path }),
    ])
}

fn read_header_route(name: &str, body: &Value) -> Option<HeaderRoute> {
    let [block] = body.get("match")?.as_array()?.as_slice() else {
        return None;
    };
    let block = block.as_object()?;
    if block.len() != 1 {
        return None;
    }
    let mut matches: Vec<HeaderMatch> = block
        .get("headers")?
        .as_object()?
        .iter()
        .map(|(header, value)| {
            Some(HeaderMatch {
                header_name: header.clone(),
                value: read_string_match(value)?,
            })
        })
        .collect::<Option<_>>()?;
    matches.sort();
    Some(HeaderRoute {
        name: name.to_owned(),
        matches,
    })
}

fn read_mirror_route(name: &str, body: &Value) -> Option<MirrorRoute> {
    // Istio mirrors everything when no percentage is given.
    let percentage = match body.pointer("/mirrorPercentage/value") {
        None => 100,
        Some(v) => {
            let value = v.as_f64()?.round();
            if !(0.0..=100.0).contains(&value) {
                return None;
            }
            // In 0..=100 after the check, so the cast is exact.
            #[allow(clippy::cast_possible_truncation)]
            let percent = value as i32;
            percent
        }
    };
    let matches = match body.get("match") {
        None => Vec::new(),
        Some(list) => list
            .as_array()?
            .iter()
            .map(|block| {
                let block = block.as_object()?;
                let mut found = MirrorMatch::default();
                for (key, value) in block {
                    match key.as_str() {
                        "method" => found.method = Some(read_string_match(value)?),
                        "uri" => found.path = Some(read_string_match(value)?),
                        "headers" => {
                            found.headers = value
                                .as_object()?
                                .iter()
                                .map(|(h, v)| Some((h.clone(), read_string_match(v)?)))
                                .collect::<Option<BTreeMap<_, _>>>()?;
                        }
                        _ => return None,
                    }
                }
                Some(found)
            })
            .collect::<Option<_>>()?,
    };
    Some(MirrorRoute {
        name: name.to_owned(),
        percentage,
        matches,
    })
}

/// vigil's routes in place in a VirtualService, read back: each route named in
/// `vigil_routes` that has the shape vigil writes (a route edited out of shape reads as
/// absent, so the step puts it back).
pub fn read_managed_routes(virtual_service: &Value, vigil_routes: &[String]) -> ManagedRoutes {
    let http = virtual_service
        .pointer("/spec/http")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut header = Vec::new();
    let mut mirror = Vec::new();
    for body in http {
        let Some(name) = body.get("name").and_then(Value::as_str) else {
            continue;
        };
        if !vigil_routes.iter().any(|v| v == name) {
            continue;
        }
        if body.get("mirror").is_some_and(|m| !m.is_null()) {
            mirror.extend(read_mirror_route(name, body));
        } else {
            header.extend(read_header_route(name, body));
        }
    }
    ManagedRoutes::new(header, mirror)
}

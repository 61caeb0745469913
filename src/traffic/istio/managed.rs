//! vigil's own HTTP routes in a VirtualService: header routes (`setHeaderRoute`: requests
//! with matching headers go to the canary only) and mirror routes (`setMirrorRoute`: the
//! split as usual, plus a copy of a share of the matching requests to the canary). They are
//! named after the Rollout's `managedRoutes`, sit ahead of the user's routes (in that order),
//! and are the only routes vigil adds or removes. Their matches are those of the routes that
//! carry the split, each with the step's conditions added, so they are more specific and win
//! only for requests the split routes would have taken.
//!
//! What vigil put in place is recorded in the `vigil.dev/managed-routes` annotation (as on an
//! HTTPRoute), changed in the same patch; each change is guarded by `test` ops of the whole
//! route it replaces or lands next to, and of the annotation. Reading back reports a route
//! only when it is exactly what vigil would build from the record now, so a route edited or
//! removed by someone else is put back.

use json_patch::{AddOperation, Patch, PatchOperation, RemoveOperation, ReplaceOperation};
use serde_json::{Map, Value, json};

use super::{IstioError, Side, Split, http_routes, managed_routes, pointer, test};
use crate::traffic::{HeaderRoute, ManagedRoutes, MirrorRoute, StringMatch};

/// The annotation recording the managed routes vigil put on a VirtualService (the same key
/// as on an HTTPRoute).
pub const ROUTES_ANNOTATION: &str = "vigil.dev/managed-routes";

fn string_match(value: &StringMatch) -> Value {
    match value {
        StringMatch::Exact(v) => json!({"exact": v}),
        StringMatch::Prefix(v) => json!({"prefix": v}),
        StringMatch::Regex(v) => json!({"regex": v}),
    }
}

/// `block` (one Istio match) with `headers` added to its header conditions; Istio wants
/// header names in lower case.
fn with_headers<'h>(
    mut block: Map<String, Value>,
    headers: impl IntoIterator<Item = (&'h str, &'h StringMatch)>,
) -> Value {
    let mut all = block
        .get("headers")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    for (name, value) in headers {
        all.insert(name.to_ascii_lowercase(), string_match(value));
    }
    if !all.is_empty() {
        block.insert("headers".into(), Value::Object(all));
    }
    Value::Object(block)
}

/// What vigil's routes are built from: the match blocks of the routes that carry the split
/// (one empty block for a route without `match`: it matches every request), the first such
/// route's destinations, and its canary `destination`.
struct SplitRoutes {
    blocks: Vec<Map<String, Value>>,
    destinations: Value,
    canary: Value,
}

fn split_routes(
    virtual_service: &Value,
    named: &[String],
    split: &Split,
    vigil_routes: &[String],
) -> Result<SplitRoutes, IstioError> {
    let routes = http_routes(virtual_service)?;
    let managed = managed_routes(&routes, named, split, vigil_routes)?;
    let ordinary: Vec<_> = managed
        .iter()
        .filter(|m| {
            !m.route
                .name
                .as_ref()
                .is_some_and(|n| vigil_routes.contains(n))
        })
        .collect();
    let first = ordinary
        .first()
        .ok_or_else(|| IstioError::FindDestinations {
            stable: split.describe(Side::Stable),
            canary: split.describe(Side::Canary),
        })?;
    let http = |index: usize| virtual_service.pointer(&format!("/spec/http/{index}"));
    let mut blocks = Vec::new();
    for m in &ordinary {
        let found: Vec<Map<String, Value>> = http(m.route.index)
            .and_then(|r| r.get("match"))
            .and_then(Value::as_array)
            .map(|list| list.iter().filter_map(|b| b.as_object().cloned()).collect())
            .unwrap_or_default();
        if found.is_empty() {
            blocks.push(Map::new());
        } else {
            blocks.extend(found);
        }
    }
    let destinations = http(first.route.index)
        .and_then(|r| r.get("route"))
        .cloned()
        .unwrap_or(Value::Null);
    let canary = destinations
        .pointer(&format!("/{}/destination", first.canary.index))
        .cloned()
        .unwrap_or(Value::Null);
    Ok(SplitRoutes {
        blocks,
        destinations,
        canary,
    })
}

/// The Istio route of the header route `route`: the split routes' matches with its headers
/// added (all must match), to the canary only.
fn header_route_body(route: &HeaderRoute, split: &SplitRoutes) -> Value {
    let matches: Vec<Value> = split
        .blocks
        .iter()
        .map(|block| {
            with_headers(
                block.clone(),
                route
                    .matches
                    .iter()
                    .map(|m| (m.header_name.as_str(), &m.value)),
            )
        })
        .collect();
    json!({
        "name": route.name,
        "match": matches,
        "route": [{"destination": split.canary, "weight": 100}],
    })
}

/// The Istio route of the mirror route `route`: every combination of a split route's match
/// and a mirror match (the mirror's method and path, when set, replace the split route's),
/// served as the first split route serves it, plus a copy of `percentage` percent of the
/// requests to the canary.
fn mirror_route_body(route: &MirrorRoute, split: &SplitRoutes) -> Value {
    let mut matches = Vec::new();
    for block in &split.blocks {
        for wanted in &route.matches {
            let mut combined = block.clone();
            if let Some(method) = &wanted.method {
                combined.insert("method".into(), string_match(method));
            }
            if let Some(path) = &wanted.path {
                combined.insert("uri".into(), string_match(path));
            }
            matches.push(with_headers(
                combined,
                wanted.headers.iter().map(|(k, v)| (k.as_str(), v)),
            ));
        }
    }
    json!({
        "name": route.name,
        "match": matches,
        "route": split.destinations,
        "mirror": split.canary,
        "mirrorPercentage": {"value": f64::from(route.percentage.clamp(0, 100))},
    })
}

/// The managed routes recorded on a VirtualService (none when the annotation is absent or
/// unreadable).
pub fn recorded_routes(virtual_service: &Value) -> ManagedRoutes {
    virtual_service
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(ROUTES_ANNOTATION))
        .and_then(Value::as_str)
        .and_then(|text| serde_json::from_str::<ManagedRoutes>(text).ok())
        .map(|r| ManagedRoutes::new(r.header, r.mirror))
        .unwrap_or_default()
}

/// Refuses a VirtualService where a route carries a name the Rollout lists in
/// `managedRoutes` but vigil did not put there (it is not recorded in the annotation): that
/// route is someone else's, and vigil would otherwise replace or remove it as its own. vigil
/// adds a route and its record in one patch, so an unrecorded route of that name was never
/// vigil's.
pub fn check_route_names(
    virtual_service: &Value,
    managed_routes: &[String],
) -> Result<(), IstioError> {
    let recorded = recorded_routes(virtual_service);
    let is_recorded = |name: &str| {
        recorded.header.iter().any(|h| h.name == name)
            || recorded.mirror.iter().any(|m| m.name == name)
    };
    for (index, route) in http_list(virtual_service).iter().enumerate() {
        let Some(name) = route.get("name").and_then(Value::as_str) else {
            continue;
        };
        if managed_routes.iter().any(|m| m == name) && !is_recorded(name) {
            return Err(IstioError::ClaimRoute {
                route: index,
                name: name.to_owned(),
            });
        }
    }
    Ok(())
}

/// The names of vigil's own routes in a VirtualService: those recorded on it and those the
/// Rollout lists in `managedRoutes`.
pub fn vigil_route_names(virtual_service: &Value, managed_routes: &[String]) -> Vec<String> {
    let recorded = recorded_routes(virtual_service);
    let mut names: Vec<String> = managed_routes.to_vec();
    for name in recorded
        .header
        .iter()
        .map(|h| &h.name)
        .chain(recorded.mirror.iter().map(|m| &m.name))
    {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    names
}

fn http_list(virtual_service: &Value) -> &[Value] {
    virtual_service
        .pointer("/spec/http")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

fn find_route<'v>(virtual_service: &'v Value, name: &str) -> Option<(usize, &'v Value)> {
    http_list(virtual_service)
        .iter()
        .enumerate()
        .find(|(_, r)| r.get("name").and_then(Value::as_str) == Some(name))
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

/// The ops that put `body` in place as the route of its name: replaced where a route of that
/// name is (guarded by a test of the whole route read), inserted at its place otherwise
/// (guarded by a test of the route it lands before). Empty when it is there already.
fn put_route(virtual_service: &Value, body: Value, vigil_routes: &[String]) -> Vec<PatchOperation> {
    let name = body
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if let Some((index, current)) = find_route(virtual_service, &name) {
        if *current == body {
            return Vec::new();
        }
        let path = pointer(["spec", "http", &index.to_string()]);
        return vec![
            test(path.clone(), current.clone()),
            PatchOperation::Replace(ReplaceOperation { path, value: body }),
        ];
    }
    let http = http_list(virtual_service);
    let index = insert_index(http, &name, vigil_routes);
    let path = pointer(["spec", "http", &index.to_string()]);
    let mut ops = Vec::new();
    if let Some(next) = http.get(index) {
        ops.push(test(path.clone(), next.clone()));
    }
    ops.push(PatchOperation::Add(AddOperation { path, value: body }));
    ops
}

/// The ops that record `routes` in the annotation, guarded by a test of what was recorded.
/// Empty when nothing changes.
fn record_ops(virtual_service: &Value, routes: &ManagedRoutes) -> Vec<PatchOperation> {
    let text = serde_json::to_string(routes).unwrap_or_default();
    let annotations = virtual_service
        .pointer("/metadata/annotations")
        .and_then(Value::as_object);
    let current = annotations.and_then(|a| a.get(ROUTES_ANNOTATION));
    if current.and_then(Value::as_str) == Some(text.as_str()) {
        return Vec::new();
    }
    let Some(_) = annotations else {
        let mut map = Map::new();
        map.insert(ROUTES_ANNOTATION.to_owned(), Value::from(text));
        return vec![PatchOperation::Add(AddOperation {
            path: pointer(["metadata", "annotations"]),
            value: Value::Object(map),
        })];
    };
    let path = pointer(["metadata", "annotations", ROUTES_ANNOTATION]);
    match current {
        Some(old) => vec![
            test(path.clone(), old.clone()),
            PatchOperation::Replace(ReplaceOperation {
                path,
                value: Value::from(text),
            }),
        ],
        None => vec![PatchOperation::Add(AddOperation {
            path,
            value: Value::from(text),
        })],
    }
}

/// The whole patch of one change: the route put in place or removed, then the record.
fn change_patch(
    virtual_service: &Value,
    route_ops: Vec<PatchOperation>,
    routes: &ManagedRoutes,
) -> Patch {
    let mut ops = route_ops;
    ops.extend(record_ops(virtual_service, routes));
    Patch(ops)
}

/// The patch that puts the header route `route` in place in a VirtualService (`named`,
/// `split`: how its weighed routes are found; `managed`: the Rollout's `managedRoutes`).
pub fn header_route_patch(
    virtual_service: &Value,
    named: &[String],
    split: &Split,
    managed: &[String],
    route: &HeaderRoute,
) -> Result<Patch, IstioError> {
    check_route_names(virtual_service, managed)?;
    let names = vigil_route_names(virtual_service, managed);
    let body = header_route_body(route, &split_routes(virtual_service, named, split, &names)?);
    let mut recorded = recorded_routes(virtual_service);
    recorded.header.retain(|h| h.name != route.name);
    recorded.header.push(route.clone());
    let recorded = ManagedRoutes::new(recorded.header, recorded.mirror);
    let ops = put_route(virtual_service, body, managed);
    Ok(change_patch(virtual_service, ops, &recorded))
}

/// The patch that puts the mirror route `route` in place in a VirtualService.
pub fn mirror_route_patch(
    virtual_service: &Value,
    named: &[String],
    split: &Split,
    managed: &[String],
    route: &MirrorRoute,
) -> Result<Patch, IstioError> {
    check_route_names(virtual_service, managed)?;
    let names = vigil_route_names(virtual_service, managed);
    let body = mirror_route_body(route, &split_routes(virtual_service, named, split, &names)?);
    let mut recorded = recorded_routes(virtual_service);
    recorded.mirror.retain(|m| m.name != route.name);
    recorded.mirror.push(route.clone());
    let recorded = ManagedRoutes::new(recorded.header, recorded.mirror);
    let ops = put_route(virtual_service, body, managed);
    Ok(change_patch(virtual_service, ops, &recorded))
}

/// The patch that removes vigil's route `name` and its record (the route guarded by a test
/// of the whole route read); empty when there is neither. A route of that name that is not
/// recorded is not vigil's and stays.
pub fn remove_route_patch(virtual_service: &Value, name: &str) -> Patch {
    let mut ops = Vec::new();
    let mut recorded = recorded_routes(virtual_service);
    let is_recorded = recorded.header.iter().any(|h| h.name == name)
        || recorded.mirror.iter().any(|m| m.name == name);
    // A route of that name vigil did not record is someone else's: left alone.
    if let Some((index, current)) = find_route(virtual_service, name).filter(|_| is_recorded) {
        let path = pointer(["spec", "http", &index.to_string()]);
        ops.push(test(path.clone(), current.clone()));
        ops.push(PatchOperation::Remove(RemoveOperation { path }));
    }
    recorded.header.retain(|h| h.name != name);
    recorded.mirror.retain(|m| m.name != name);
    change_patch(virtual_service, ops, &recorded)
}

/// vigil's routes in place in a VirtualService, read back: each recorded route whose route
/// is exactly what vigil would build from it now (one edited or removed by someone else
/// reads as absent, so the step puts it back).
pub fn read_managed_routes(
    virtual_service: &Value,
    named: &[String],
    split: &Split,
    managed: &[String],
) -> ManagedRoutes {
    let recorded = recorded_routes(virtual_service);
    let names = vigil_route_names(virtual_service, managed);
    let Ok(split_now) = split_routes(virtual_service, named, split, &names) else {
        return ManagedRoutes::default();
    };
    let in_place = |name: &str, body: Value| {
        find_route(virtual_service, name).is_some_and(|(_, current)| *current == body)
    };
    let header = recorded
        .header
        .into_iter()
        .filter(|h| in_place(&h.name, header_route_body(h, &split_now)))
        .collect();
    let mirror = recorded
        .mirror
        .into_iter()
        .filter(|m| in_place(&m.name, mirror_route_body(m, &split_now)))
        .collect();
    ManagedRoutes::new(header, mirror)
}

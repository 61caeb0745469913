use std::collections::BTreeMap;

use serde_json::json;

use super::*;
use crate::traffic::{
    HeaderMatch, HeaderRoute, ManagedRoutes, MirrorMatch, MirrorRoute, StringMatch,
};

fn hosts() -> Split {
    Split::Hosts {
        stable: "web-stable".into(),
        canary: "web-canary".into(),
        namespace: "shop".into(),
    }
}

fn vigil_routes() -> Vec<String> {
    vec!["testers".into(), "shadow".into()]
}

fn vs() -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {
            "hosts": ["web"],
            "http": [{
                "name": "primary",
                "route": [
                    {"destination": {"host": "web-stable", "port": {"number": 80}}, "weight": 90},
                    {"destination": {"host": "web-canary", "port": {"number": 80}}, "weight": 10}
                ]
            }]
        }
    })
}

fn header_route() -> HeaderRoute {
    HeaderRoute {
        name: "testers".into(),
        matches: vec![HeaderMatch {
            header_name: "x-canary".into(),
            value: StringMatch::Exact("yes".into()),
        }],
    }
}

fn mirror_route() -> MirrorRoute {
    MirrorRoute {
        name: "shadow".into(),
        percentage: 35,
        matches: vec![MirrorMatch {
            method: Some(StringMatch::Exact("GET".into())),
            path: Some(StringMatch::Prefix("/api".into())),
            headers: BTreeMap::new(),
        }],
    }
}

fn apply(value: &Value, patch: &json_patch::Patch) -> Value {
    let mut patched = value.clone();
    json_patch::patch(&mut patched, patch).expect("applies");
    patched
}

fn record(routes: &ManagedRoutes) -> Value {
    json!(serde_json::to_string(routes).expect("json"))
}

fn read(vs: &Value) -> ManagedRoutes {
    read_managed_routes(vs, &[], &hosts(), &vigil_routes())
}

#[test]
fn a_header_route_goes_first_to_the_canary_only_and_reads_back() {
    let original = vs();
    let patch = header_route_patch(&original, &[], &hosts(), &vigil_routes(), &header_route())
        .expect("patch");
    let recorded = ManagedRoutes::new(vec![header_route()], vec![]);
    assert_eq!(
        serde_json::to_value(&patch).expect("json"),
        json!([
            {"op": "test", "path": "/spec/http/0", "value": original["spec"]["http"][0]},
            {"op": "add", "path": "/spec/http/0", "value": {
                "name": "testers",
                "match": [{"headers": {"x-canary": {"exact": "yes"}}}],
                "route": [{"destination": {"host": "web-canary", "port": {"number": 80}}, "weight": 100}]
            }},
            {"op": "add", "path": "/metadata/annotations", "value": {ROUTES_ANNOTATION: record(&recorded)}},
        ])
    );
    let patched = apply(&original, &patch);
    assert_eq!(read(&patched), recorded);
    // In place already: nothing to send. The header route is never weighed.
    assert_eq!(
        header_route_patch(&patched, &[], &hosts(), &vigil_routes(), &header_route()),
        Ok(json_patch::Patch(vec![]))
    );
    assert_eq!(
        canary_weight(&patched, &[], &hosts(), &vigil_route_names(&patched, &[])),
        Ok(Some(10))
    );
    // Removed, only an empty record is left.
    let removed = apply(&patched, &remove_route_patch(&patched, "testers"));
    assert_eq!(removed["spec"], original["spec"]);
    assert!(read(&removed).is_empty());
    assert_eq!(
        remove_route_patch(&removed, "testers"),
        json_patch::Patch(vec![])
    );
}

#[test]
fn a_header_route_keeps_the_split_routes_matches_and_header_case_as_asked() {
    let mut original = vs();
    original["spec"]["http"][0]["match"] =
        json!([{"uri": {"prefix": "/api"}}, {"uri": {"prefix": "/v2"}}]);
    let mut route = header_route();
    route.matches[0].header_name = "X-Canary".into();
    let patched = apply(
        &original,
        &header_route_patch(&original, &[], &hosts(), &vigil_routes(), &route).expect("patch"),
    );
    // Only requests the split route would take; Istio wants lower-case header names.
    assert_eq!(
        patched["spec"]["http"][0]["match"],
        json!([
            {"uri": {"prefix": "/api"}, "headers": {"x-canary": {"exact": "yes"}}},
            {"uri": {"prefix": "/v2"}, "headers": {"x-canary": {"exact": "yes"}}}
        ])
    );
    // Read back as asked (the record keeps the spelling).
    assert_eq!(read(&patched), ManagedRoutes::new(vec![route], vec![]));
}

#[test]
fn a_mirror_route_copies_the_split_mirrors_to_the_canary_and_follows_the_weights() {
    let with_header = apply(
        &vs(),
        &header_route_patch(&vs(), &[], &hosts(), &vigil_routes(), &header_route()).expect("h"),
    );
    let patch = mirror_route_patch(
        &with_header,
        &[],
        &hosts(),
        &vigil_routes(),
        &mirror_route(),
    )
    .expect("patch");
    let patched = apply(&with_header, &patch);
    // After the header route (managedRoutes order), ahead of the user's route.
    let names: Vec<&str> = patched["spec"]["http"]
        .as_array()
        .expect("http")
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(names, ["testers", "shadow", "primary"]);
    assert_eq!(
        patched["spec"]["http"][1],
        json!({
            "name": "shadow",
            "match": [{"method": {"exact": "GET"}, "uri": {"prefix": "/api"}}],
            "route": vs()["spec"]["http"][0]["route"],
            "mirror": {"host": "web-canary", "port": {"number": 80}},
            "mirrorPercentage": {"value": 35.0}
        })
    );
    assert_eq!(
        read(&patched),
        ManagedRoutes::new(vec![header_route()], vec![mirror_route()])
    );
    // A weight change moves the mirror route's split too, and it still reads back.
    let names = vigil_route_names(&patched, &[]);
    let weighed = apply(
        &patched,
        &weight_patch(&patched, &[], &hosts(), &names, 40).expect("weights"),
    );
    assert_eq!(weighed["spec"]["http"][1]["route"][1]["weight"], json!(40));
    assert_eq!(weighed["spec"]["http"][2]["route"][1]["weight"], json!(40));
    assert_eq!(canary_weight(&weighed, &[], &hosts(), &names), Ok(Some(40)));
    assert_eq!(
        read(&weighed),
        ManagedRoutes::new(vec![header_route()], vec![mirror_route()])
    );
}

#[test]
fn a_changed_managed_route_is_replaced_under_a_test_of_what_was_read() {
    let patched = apply(
        &vs(),
        &mirror_route_patch(&vs(), &[], &hosts(), &vigil_routes(), &mirror_route()).expect("m"),
    );
    let mut wider = mirror_route();
    wider.percentage = 100;
    let patch =
        mirror_route_patch(&patched, &[], &hosts(), &vigil_routes(), &wider).expect("patch");
    let ops = serde_json::to_value(&patch).expect("json");
    assert_eq!(ops[0]["op"], "test");
    assert_eq!(ops[0]["value"], patched["spec"]["http"][0]);
    assert_eq!(ops[1]["op"], "replace");
    assert_eq!(ops[1]["path"], "/spec/http/0");
    // The record is guarded too.
    assert_eq!(ops[2]["op"], "test");
    assert_eq!(
        ops[2]["path"],
        "/metadata/annotations/vigil.dev~1managed-routes"
    );
    // Someone edited the route meanwhile: the patch fails instead of overwriting it.
    let mut edited = patched.clone();
    edited["spec"]["http"][0]["mirrorPercentage"]["value"] = json!(1.0);
    assert!(json_patch::patch(&mut edited, &patch).is_err());
}

#[test]
fn routes_edited_or_removed_by_someone_else_read_as_absent() {
    let patched = apply(
        &vs(),
        &header_route_patch(&vs(), &[], &hosts(), &vigil_routes(), &header_route()).expect("h"),
    );
    let mut edited = patched.clone();
    edited["spec"]["http"][0]["match"][0]["uri"] = json!({"prefix": "/"});
    assert!(read(&edited).is_empty());
    let mut removed = patched.clone();
    removed["spec"]["http"]
        .as_array_mut()
        .expect("http")
        .remove(0);
    assert!(read(&removed).is_empty());
    // A route of the same name never recorded by vigil is not vigil's.
    let mut unrecorded = patched;
    unrecorded["metadata"]["annotations"] = json!({});
    assert!(read(&unrecorded).is_empty());
}

#[test]
fn a_users_route_named_like_a_managed_route_is_refused_and_never_replaced_or_removed() {
    // The user's own route happens to carry the name the Rollout lists in managedRoutes.
    let mut original = vs();
    original["spec"]["http"]
        .as_array_mut()
        .expect("http")
        .insert(
            0,
            json!({"name": "testers", "route": [{"destination": {"host": "web-stable"}}]}),
        );
    let refused = Err(IstioError::ClaimRoute {
        route: 0,
        name: "testers".into(),
    });
    assert_eq!(check_route_names(&original, &vigil_routes()), refused);
    assert_eq!(
        header_route_patch(&original, &[], &hosts(), &vigil_routes(), &header_route()).map(|_| ()),
        refused
    );
    let mut mirror = mirror_route();
    mirror.name = "testers".into();
    assert_eq!(
        mirror_route_patch(&original, &[], &hosts(), &vigil_routes(), &mirror).map(|_| ()),
        refused
    );
    let removed = apply(&original, &remove_route_patch(&original, "testers"));
    assert_eq!(
        removed["spec"], original["spec"],
        "an unrecorded route is not vigil's to remove"
    );
    let message = IstioError::ClaimRoute {
        route: 0,
        name: "testers".into(),
    }
    .to_string();
    assert!(
        message.starts_with("spec.http[0] is named \"testers\""),
        "{message}"
    );
    // Once vigil put its own route there (recorded in the same patch), it is vigil's.
    let patch =
        header_route_patch(&vs(), &[], &hosts(), &vigil_routes(), &header_route()).expect("patch");
    let patched = apply(&vs(), &patch);
    assert_eq!(check_route_names(&patched, &vigil_routes()), Ok(()));
}
